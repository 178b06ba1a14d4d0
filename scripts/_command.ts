/**
 * What the companion commands in scripts/ share with mod.ts's command line: one line on
 * stderr for anything thrown, exit 2 for a usage or configuration error, 1 otherwise.
 * Not a command itself.
 *
 * @module
 */
import { ConfigError, EXIT_FAILURE, EXIT_USAGE } from "../src/errors.ts";

/** Run a command's body; what it throws becomes `error: <first line>` and an exit code. */
export async function runScript(body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`error: ${message.split("\n")[0]}\n`);
    return error instanceof ConfigError ? EXIT_USAGE : EXIT_FAILURE;
  }
}
