/**
 * `sqs-login-masker recover` (src/commands/recover.ts), kept at this path so that runbooks written
 * for `npx tsx scripts/recover.ts` keep working.
 *
 * @module
 */
import { isMainModule } from "../src/runtime.ts";
import process from "node:process";
import { main as sqsLoginMasker } from "../src/main.ts";

export * from "../src/commands/recover.ts";

if (isMainModule(import.meta)) {
  process.exitCode = await sqsLoginMasker(["recover", ...process.argv.slice(2)], process.env);
}
