/**
 * `sqs-login-masker ipcrypt` (src/commands/ipcrypt.ts), kept at this path so that runbooks written
 * for `npx tsx scripts/ipcrypt.ts` keep working.
 *
 * @module
 */
import { isMainModule } from "../src/runtime.ts";
import process from "node:process";
import { main as sqsLoginMasker } from "../src/main.ts";

export * from "../src/commands/ipcrypt.ts";

if (isMainModule(import.meta)) {
  process.exitCode = await sqsLoginMasker(["ipcrypt", ...process.argv.slice(2)], process.env);
}
