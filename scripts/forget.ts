/**
 * `sqs-login-masker forget` (src/commands/forget.ts), kept at this path so that runbooks written
 * for `npx tsx scripts/forget.ts` keep working.
 *
 * @module
 */
import { isMainModule } from "../src/runtime.ts";
import process from "node:process";
import { main as sqsLoginMasker } from "../src/main.ts";

export * from "../src/commands/forget.ts";

if (isMainModule(import.meta)) {
  process.exitCode = await sqsLoginMasker(["forget", ...process.argv.slice(2)], process.env);
}
