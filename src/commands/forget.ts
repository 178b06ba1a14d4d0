/**
 * Erase a user's PII (the right to be forgotten), audited.
 *
 * ```sh
 * sqs-login-masker forget --database-url URL --user-id ID --reason "TEXT" --ticket ID
 * ```
 *
 * One call to `pii_vault.forget_user`, one transaction:
 * 1. the user's rows in `user_logins` keep their other columns, but `masked_ip` and
 *    `masked_device_id` become `erased` (whatever strategy masked them: an HMAC of an IPv4
 *    address can be reversed by whoever holds the key), so no row of theirs leads to a value;
 * 2. each vault entry those rows referenced is deleted (a quarantined copy too), and its token
 *    tombstoned so that no later write brings it back, even a value other users' rows hold:
 *    the loader may write rows for any user id, so such a row may be a decoy planted to keep
 *    the value; how many values other rows held is reported (`also_in_other_users_rows`);
 * 3. pending recovery requests that name any of those tokens are dropped;
 * 4. an audit row records who (set by the database), why, and counts, and deliberately not
 *    the tokens.
 *
 * No key needed: erasure never opens an entry. Needs the pii_vault_admin role.
 *
 * @module
 */
import { Type } from "@sinclair/typebox";
import { type DatabasePool, sql } from "slonik";
import { ConfigError } from "../errors.ts";
import { toStandardSchema } from "../typed-sql.ts";
import { ERASED_MARKER } from "../../strategies/_vault-crypto.ts";
import { parseVaultArgs, runVaultCommand, type VaultArgs, VaultError } from "./vault-command.ts";

export const HELP = `Usage: sqs-login-masker forget --database-url URL --user-id ID --reason "TEXT" --ticket ID
       (from a checkout: npx tsx mod.ts forget …, or npx tsx scripts/forget.ts …)

Make a user's ip and device_id unrecoverable: their rows in user_logins get "${ERASED_MARKER}" in
masked_ip and masked_device_id, and the vault entries of their values are deleted and never
written again, even a value other users' rows hold too (those rows may be decoys; how many
values they shared is reported as also_in_other_users_rows). Audited.

  --database-url URL   a role with pii_vault_admin (sqs-login-masker vault-roles)  [env DATABASE_URL]
  --user-id ID         the user to forget
  --reason TEXT        why; required
  --ticket ID          the erasure request's number; required
  --env-file PATH      read variables (DATABASE_URL, ...) from a file
  -h, --help           show this help

Exit codes: 0 erased, 1 runtime failure (no such user), 2 usage error.
`;

/** What an erasure did. */
export interface ForgetOutcome {
  rows: number;
  deleted: number;
  /** The user's values that other users' rows hold too: erased for them as well. */
  alsoInOtherUsersRows: number;
}

const sqlForgetRow = sql.type(toStandardSchema(Type.Object({
  erased_rows: Type.Integer(),
  entries_deleted: Type.Integer(),
  also_in_other_users_rows: Type.Integer(),
})));

/**
 * Erase a user's masked values and the vault entries of those values.
 *
 * @throws {VaultError} when the user has no rows in user_logins (the attempt is audited)
 */
export async function forgetUser(
  pool: DatabasePool,
  request: { userId: string; reason: string; ticket: string },
): Promise<ForgetOutcome> {
  const outcome = await pool.one(sqlForgetRow`
    SELECT erased_rows, entries_deleted, also_in_other_users_rows FROM pii_vault.forget_user(${request.userId}, ${request.reason}, ${request.ticket})`);
  if (outcome.erased_rows === 0) {
    throw new VaultError(`No rows for user_id ${JSON.stringify(request.userId)} in user_logins: nothing to forget`);
  }
  return {
    rows: outcome.erased_rows,
    deleted: outcome.entries_deleted,
    alsoInOtherUsersRows: outcome.also_in_other_users_rows,
  };
}

function parseForgetArgs(argv: readonly string[], env: Record<string, string | undefined>): VaultArgs {
  const args = parseVaultArgs(argv, env, { flags: { "user-id": { type: "string" } } });
  if (!args.help && !(args.values["user-id"] as string | undefined)?.trim()) {
    throw new ConfigError("No user given: pass --user-id ID");
  }
  return args;
}

export async function main(argv: readonly string[], env: Record<string, string | undefined>): Promise<number> {
  return await runVaultCommand(argv, env, HELP, parseForgetArgs, async (pool, args) => {
    const outcome = await forgetUser(pool, {
      userId: args.values["user-id"] as string,
      reason: args.reason,
      ticket: args.ticket,
    });
    process.stdout.write(
      `forgotten: rows=${outcome.rows} vault_entries_deleted=${outcome.deleted} also_in_other_users_rows=${outcome.alsoInOtherUsersRows}\n`,
    );
  });
}
