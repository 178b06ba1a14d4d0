/**
 * Erase a user's PII (the right to be forgotten), audited.
 *
 * ```sh
 * npx tsx scripts/forget.ts --database-url URL --user-id ID --reason "TEXT"
 * ```
 *
 * In one transaction:
 * 1. the user's rows in `user_logins` keep their other columns, but `masked_ip` and
 *    `masked_device_id` become `erased` (whatever strategy masked them: an HMAC of an IPv4
 *    address can be reversed by whoever holds the key), so no row of theirs leads to a value;
 * 2. each vault entry those rows referenced is deleted when no other user's row still
 *    references it; a value shared with others (a household's IP) stays, because it is
 *    their data too, but nothing links it to this user any more;
 * 3. an audit row records who, why, and counts, and deliberately not the tokens, which
 *    would re-create the link for the shared ones.
 *
 * No `VAULT_KEY` needed: erasure never decrypts. Needs the pii_vault_admin role.
 *
 * @module
 */
import { type DatabasePool, sql } from "slonik";
import { ConfigError } from "../mod.ts";
import { ERASED_MARKER } from "../strategies/vault.ts";
import { osUserName, parseVaultArgs, runVaultCommand, type VaultArgs, VaultError, writeAudit } from "./_vault-command.ts";

const HELP = `Usage: npx tsx scripts/forget.ts --database-url URL --user-id ID --reason "TEXT"

Make a user's ip and device_id unrecoverable: their rows in user_logins get "${ERASED_MARKER}" in
masked_ip and masked_device_id, and the vault entries only they referenced are deleted.
Values other users share are kept for those users, unlinked from this one. Audited.

  --database-url URL   a role with pii_vault_admin (scripts/vault-roles.sql)  [env DATABASE_URL]
  --user-id ID         the user to forget
  --reason TEXT        why (e.g. the erasure request's number); required
  -h, --help           show this help

Exit codes: 0 erased, 1 runtime failure (no such user), 2 usage error.
`;

/** What an erasure did. */
export interface ForgetOutcome {
  rows: number;
  deleted: number;
  keptShared: number;
}

/**
 * Erase a user's masked values and the vault entries only they referenced.
 *
 * @throws {VaultError} when the user has no rows in user_logins
 */
export async function forgetUser(
  pool: DatabasePool,
  request: { userId: string; reason: string; osUser: string },
): Promise<ForgetOutcome> {
  return await pool.transaction(async (tx) => {
    // Loaders' inserts into entries conflict with this lock, and each batch writes its
    // entries in the same transaction as its rows. So a batch either committed before we
    // look (its rows count as references) or writes its entries after we commit
    // (re-creating any we delete): no row is left pointing at a deleted entry.
    await tx.query(sql.unsafe`LOCK TABLE pii_vault.entries IN SHARE ROW EXCLUSIVE MODE`);
    const tokens = await tx.anyFirst(sql.unsafe`
      SELECT DISTINCT masked FROM user_logins, LATERAL (VALUES (masked_ip), (masked_device_id)) AS v(masked)
      WHERE user_id = ${request.userId} AND masked LIKE 'vlt1:%'`) as string[];
    const { rowCount: rows } = await tx.query(sql.unsafe`
      UPDATE user_logins SET masked_ip = ${ERASED_MARKER}, masked_device_id = ${ERASED_MARKER}
      WHERE user_id = ${request.userId}`);
    if (rows === 0) throw new VaultError(`No rows for user_id ${JSON.stringify(request.userId)} in user_logins: nothing to forget`);
    const deleted = (await tx.query(sql.unsafe`
      DELETE FROM pii_vault.entries e
      WHERE e.token = ANY(${sql.array(tokens, "text")})
        AND NOT EXISTS (SELECT 1 FROM user_logins u WHERE u.masked_ip = e.token OR u.masked_device_id = e.token)`)).rowCount;
    const outcome = { rows, deleted, keptShared: tokens.length - deleted };
    await writeAudit(tx, {
      action: "forget", reason: request.reason, osUser: request.osUser, userId: request.userId,
      detail: `rows=${outcome.rows} entries_deleted=${outcome.deleted} shared_kept=${outcome.keptShared}`,
    });
    return outcome;
  });
}

function parseForgetArgs(argv: readonly string[], env: Record<string, string | undefined>): VaultArgs {
  const args = parseVaultArgs(argv, env, { flags: { "user-id": { type: "string" } } });
  if (!args.help && !(args.values["user-id"] as string | undefined)?.trim()) {
    throw new ConfigError("No user given: pass --user-id ID");
  }
  return args;
}

async function main(argv: readonly string[], env: Record<string, string | undefined>): Promise<number> {
  return await runVaultCommand(argv, env, HELP, parseForgetArgs, async (pool, args) => {
    const outcome = await forgetUser(pool, { userId: args.values["user-id"] as string, reason: args.reason, osUser: osUserName(env) });
    process.stdout.write(
      `forgotten: rows=${outcome.rows} vault_entries_deleted=${outcome.deleted} shared_entries_kept_for_other_users=${outcome.keptShared}\n`,
    );
  });
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2), process.env);
}
