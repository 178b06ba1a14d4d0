/**
 * `sqs-login-masker rotate-vault-key` (src/commands/rotate-vault-key.ts), kept at this path so that runbooks written
 * for `npx tsx scripts/rotate-vault-key.ts` keep working.
 *
 * @module
 */
import { isMainModule } from "../src/runtime.ts";
import process from "node:process";
import { main as sqsLoginMasker } from "../src/main.ts";

export * from "../src/commands/rotate-vault-key.ts";

if (isMainModule(import.meta)) {
  process.exitCode = await sqsLoginMasker(["rotate-vault-key", ...process.argv.slice(2)], process.env);
}
