/**
 * `sqs-login-masker vault-keygen`: print new vault keys as environment lines, one secret
 * per role (docs/vault.md): the token key and the recovery public key for the loader, the
 * recovery private key for recovery.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import process from "node:process";
import { generateRecoveryKeyPair } from "../../strategies/_vault-crypto.ts";
import { parseFlags } from "../config.ts";
import { ConfigError, failed } from "../errors.ts";

export const HELP = `Usage: sqs-login-masker vault-keygen [--recovery-only]
       (from a checkout: npx tsx mod.ts vault-keygen)

Print new keys for the vault strategy as environment lines, each for one role:

  VAULT_TOKEN_KEY             the loader's alone: makes the tokens
  VAULT_RECOVERY_PUBLIC_KEY   the loader's: seals entries, opens none
  VAULT_RECOVERY_KEY          the recovery role's: opens entries, makes no token

Give no role both VAULT_TOKEN_KEY and VAULT_RECOVERY_KEY: together they reverse tokens by
trying every address. The keys go to stdout only; nothing is stored.

  --recovery-only   only a new recovery key pair, for sqs-login-masker rotate-vault-key
  -h, --help        show this help

Exit codes: 0 printed, 2 usage error.
`;

/** Print the keys (or the help). */
export function main(argv: readonly string[]): number {
  try {
    const flags = parseFlags(argv, {
      help: { type: "boolean", short: "h" },
      "recovery-only": { type: "boolean" },
    });
    if (flags.help) {
      process.stdout.write(HELP);
      return 0;
    }
    const pair = generateRecoveryKeyPair();
    const lines = [
      ...flags["recovery-only"] ? [] : [
        "# The loader's alone: makes the tokens. Never give it to the recovery role.",
        `VAULT_TOKEN_KEY=${randomBytes(32).toString("base64url")}`,
      ],
      "# The loader's: seals vault entries, opens none.",
      `VAULT_RECOVERY_PUBLIC_KEY=${pair.publicKey}`,
      "# The recovery role's (and the admin's, to rotate): opens entries, makes no token.",
      `VAULT_RECOVERY_KEY=${pair.privateKey}`,
    ];
    process.stdout.write(lines.join("\n") + "\n");
    return 0;
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return failed(error);
  }
}
