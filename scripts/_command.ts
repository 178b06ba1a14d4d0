/**
 * What the companion commands in scripts/ share with mod.ts's command line: anything thrown
 * ends as `failed` (src/errors.ts) ends every command, one line on stderr and exit 2 for a
 * usage or configuration error, 1 otherwise. Not a command itself.
 *
 * @module
 */
import { failed } from "../src/errors.ts";

/** Run a command's body; what it throws becomes `error: <first line>` and an exit code. */
export async function runScript(body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (error) {
    return failed(error);
  }
}
