/**
 * `sqs-login-masker ipcrypt` (src/commands/ipcrypt.ts), kept at this path so that runbooks written
 * for `npx tsx scripts/ipcrypt.ts` keep working.
 *
 * @module
 */
import process from "node:process";
import { main as sqsLoginMasker } from "../src/main.ts";

export * from "../src/commands/ipcrypt.ts";

if (import.meta.main) {
  process.exitCode = await sqsLoginMasker(["ipcrypt", ...process.argv.slice(2)], process.env);
}
