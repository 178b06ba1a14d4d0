/**
 * Recover originals from the vault, for those allowed to: it needs `VAULT_KEY` and a role
 * that may read `pii_vault.entries` (pii_recovery), and every recovery leaves an audit row.
 *
 * ```sh
 * VAULT_KEY=... npx tsx scripts/recover.ts --database-url URL --reason "TEXT" TOKEN [TOKEN...]
 * VAULT_KEY=... npx tsx scripts/recover.ts --database-url URL --reason "TEXT" --user-id ID
 * ```
 *
 * Prints one line per value: `field<TAB>token<TAB>original`. The audit row is written in
 * the same transaction as the read and before it; nothing is printed unless that
 * transaction commits, and nothing at all when any entry fails to decrypt.
 *
 * @module
 */
import { Type } from "@sinclair/typebox";
import { type DatabasePool, sql } from "slonik";
import { ConfigError, type PiiField, toStandardSchema } from "../mod.ts";
import {
  decryptEntry, findVaultKey, isToken, openKeyringRow, parseVaultKeys, sqlKeyringRow, VaultDecryptError, type VaultKeys,
} from "../strategies/vault.ts";
import { osUserName, parseVaultArgs, runVaultCommand, type VaultArgs, VaultError, writeAudit } from "./_vault-command.ts";

const HELP = `Usage: npx tsx scripts/recover.ts --database-url URL --reason "TEXT" TOKEN [TOKEN...]
       npx tsx scripts/recover.ts --database-url URL --reason "TEXT" --user-id ID

Print the originals behind vault tokens (or behind a user's ip and device_id in user_logins),
one line each: field, token, original, separated by tabs. Every recovery is audited in
pii_vault.audit with the reason, the database and OS user, and the tokens.

  --database-url URL   a role with pii_recovery (scripts/vault-roles.sql)  [env DATABASE_URL]
  --reason TEXT        why (e.g. a ticket number); required
  --user-id ID         recover that user's values instead of listed tokens
  -h, --help           show this help

Needs VAULT_KEY (and VAULT_KEY_VERSION if not 1); during a key rotation also
VAULT_PREVIOUS_KEY and VAULT_PREVIOUS_KEY_VERSION. See docs/vault.md.
Exit codes: 0 printed, 1 runtime failure (tampered entry, unknown token), 2 usage or key error.
`;

/** What to recover, and why. */
export interface RecoveryRequest {
  reason: string;
  osUser: string;
  tokens?: readonly string[];
  userId?: string;
}

/** One recovered value. Holds raw PII: print it only where the caller asked for it. */
export interface RecoveredValue {
  field: PiiField;
  token: string;
  value: string;
}

const EntryRow = Type.Object({
  token: Type.String(), field: Type.Union([Type.Literal("ip"), Type.Literal("device_id")]),
  key_version: Type.Integer(), sealed: Type.String(),
});
const sqlEntryRow = sql.type(toStandardSchema(EntryRow));
const sqlMaskedRow = sql.type(toStandardSchema(Type.Object({ masked: Type.String() })));

/** Fail early and precisely on a wrong key: a configured key must open its keyring row. */
async function checkKeys(pool: DatabasePool, keys: VaultKeys): Promise<void> {
  const rows = await pool.any(sqlKeyringRow`
    SELECT key_version, encode(wrapped_token_key, 'base64') AS wrapped_token_key FROM pii_vault.keyring`);
  for (const row of rows) {
    const key = findVaultKey(keys, row.key_version);
    if (key) openKeyringRow(key, row.wrapped_token_key);
  }
}

/**
 * The tokens in a user's rows of `user_logins`.
 *
 * @throws {VaultError} when the user has no rows, or none with a token left
 */
async function userTokens(pool: DatabasePool, userId: string): Promise<string[]> {
  const masked = await pool.anyFirst(sqlMaskedRow`
    SELECT DISTINCT masked FROM user_logins, LATERAL (VALUES (masked_ip), (masked_device_id)) AS v(masked)
    WHERE user_id = ${userId} AND masked IS NOT NULL`);
  if (masked.length === 0) throw new VaultError(`No rows for user_id ${JSON.stringify(userId)} in user_logins`);
  const tokens = masked.filter(isToken).sort();
  if (tokens.length === 0) {
    throw new VaultError(`User ${JSON.stringify(userId)} has no vault tokens in user_logins: erased by scripts/forget.ts, or loaded with another strategy`);
  }
  return tokens;
}

/**
 * Recover the originals of the given tokens, or of a user's tokens, writing the audit row
 * in the same transaction as the read.
 *
 * @returns the values in token order (for a user: ip first, then device_id)
 * @throws {VaultError} for unknown or erased tokens and for entries that fail to decrypt
 * @throws {ConfigError} when a key is wrong or the entry's key version is not configured
 */
export async function recoverValues(pool: DatabasePool, keys: VaultKeys, request: RecoveryRequest): Promise<RecoveredValue[]> {
  await checkKeys(pool, keys);
  const tokens = request.userId !== undefined ? await userTokens(pool, request.userId) : [...new Set(request.tokens ?? [])];
  return await pool.transaction(async (tx) => {
    await writeAudit(tx, { action: "recover", reason: request.reason, osUser: request.osUser, tokens, userId: request.userId });
    const rows = await tx.any(sqlEntryRow`
      SELECT token, field, key_version, encode(sealed, 'base64') AS sealed
      FROM pii_vault.entries WHERE token = ANY(${sql.array(tokens, "text")})`);
    const missing = tokens.filter((t) => !rows.some((r) => r.token === t));
    if (missing.length > 0) {
      throw new VaultError(`${missing.length} token(s) not in the vault (erased by scripts/forget.ts, or never stored): ${missing.join(" ")}`);
    }
    const byToken = new Map(rows.map((row) => [row.token, row]));
    const recovered = tokens.map((token) => {
      const row = byToken.get(token)!;
      const key = findVaultKey(keys, row.key_version);
      if (!key) {
        throw new ConfigError(
          `Token ${token} was encrypted with key version ${row.key_version}, but VAULT_KEY is version ${keys.current.version}: set VAULT_PREVIOUS_KEY and VAULT_PREVIOUS_KEY_VERSION, or finish the rotation`,
        );
      }
      try {
        return { field: row.field, token, value: decryptEntry(key, row.field, token, Buffer.from(row.sealed, "base64")) };
      } catch (error) {
        if (!(error instanceof VaultDecryptError)) throw error;
        throw new VaultError(`The vault entry for ${token} does not authenticate under key version ${key.version}: it was changed or moved after it was written (or the key is wrong); nothing recovered`);
      }
    });
    return request.userId !== undefined ? recovered.sort((a, b) => b.field.localeCompare(a.field)) : recovered;
  });
}

/** One output line; values with control characters are quoted so each stays on its line. */
export function formatRecovered({ field, token, value }: RecoveredValue): string {
  return `${field}\t${token}\t${/[\x00-\x1f\x7f]/.test(value) ? JSON.stringify(value) : value}`;
}

function parseRecoverArgs(argv: readonly string[], env: Record<string, string | undefined>): VaultArgs {
  const args = parseVaultArgs(argv, env, { flags: { "user-id": { type: "string" } }, positionals: true });
  if (args.help) return args;
  const userId = args.values["user-id"] as string | undefined;
  if (userId === undefined && args.positionals.length === 0) throw new ConfigError("Nothing to recover: give tokens, or --user-id ID");
  if (userId !== undefined && args.positionals.length > 0) throw new ConfigError("Give tokens or --user-id, not both");
  const bad = args.positionals.findIndex((t) => !isToken(t));
  // The argument is not echoed: a mistaken paste may be a raw value.
  if (bad >= 0) throw new ConfigError(`Argument ${bad + 1} is not a vault token (expected vlt1: and 43 characters)`);
  parseVaultKeys(env);
  return args;
}

async function main(argv: readonly string[], env: Record<string, string | undefined>): Promise<number> {
  return await runVaultCommand(argv, env, HELP, parseRecoverArgs, async (pool, args) => {
    const recovered = await recoverValues(pool, parseVaultKeys(env), {
      reason: args.reason,
      osUser: osUserName(env),
      tokens: args.positionals,
      userId: args.values["user-id"] as string | undefined,
    });
    process.stdout.write(recovered.map(formatRecovered).join("\n") + "\n");
  });
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2), process.env);
}
