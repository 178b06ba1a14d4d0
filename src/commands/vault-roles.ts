/**
 * `sqs-login-masker vault-roles`: print the vault's roles SQL, for its owner to run with psql.
 *
 * @module
 */
import process from "node:process";
import { VAULT_ROLES_SQL } from "../../strategies/_vault-roles.ts";
import { parseFlags } from "../config.ts";
import { ConfigError, failed } from "../errors.ts";

export const HELP = `Usage: sqs-login-masker vault-roles > vault-roles.sql
       (from a checkout: npx tsx mod.ts vault-roles; the same text is scripts/vault-roles.sql)

Print the SQL that makes the vault's roles (login_loader, pii_recovery, pii_vault_admin)
and hands the vault to a role nobody logs in as. Run it as the owner of the tables, after
the tool has run once as that owner with --strategy vault; idempotent:

  sqs-login-masker vault-roles | psql "postgres://owner@host/db" -v ON_ERROR_STOP=1 -f -

  -h, --help   show this help

docs/vault.md says what each role may do. Exit codes: 0 printed, 2 usage error.
`;

/** Print the roles SQL (or the help). */
export function main(argv: readonly string[]): number {
  try {
    const flags = parseFlags(argv, { help: { type: "boolean", short: "h" } });
    process.stdout.write(flags.help ? HELP : VAULT_ROLES_SQL);
    return 0;
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return failed(error);
  }
}
