/**
 * Move the vault to a new `VAULT_KEY`, keeping every token as it is.
 *
 * ```sh
 * VAULT_PREVIOUS_KEY=$OLD VAULT_PREVIOUS_KEY_VERSION=1 VAULT_KEY=$NEW VAULT_KEY_VERSION=2 \
 *   npx tsx scripts/rotate-vault-key.ts --database-url URL --reason "yearly rotation"
 * ```
 *
 * 1. Adds the new version to the keyring: the same token key, wrapped under the new key
 *    (tokens depend on the token key only, so they do not change).
 * 2. Re-encrypts every entry of the previous version under the new one, a batch per
 *    transaction, so a long run holds no long lock and can be run again after a stop.
 * 3. Once no entry of the previous version is left, deletes its keyring row: from then
 *    on the old key opens nothing in this database. Audited.
 *
 * Loaders still running on the old key keep working until restarted; run this again
 * after moving them to the new key to re-encrypt what they wrote meanwhile.
 *
 * @module
 */
import { Type } from "@sinclair/typebox";
import { type DatabasePool, sql } from "slonik";
import { ConfigError, toStandardSchema } from "../mod.ts";
import {
  decryptEntry, encryptEntry, insertKeyringRow, openKeyringRow, parseVaultKeys, sqlKeyringRow, VaultDecryptError,
  type VaultKey,
} from "../strategies/vault.ts";
import { osUserName, parseVaultArgs, runVaultCommand, type VaultArgs, VaultError, writeAudit } from "./_vault-command.ts";

const HELP = `Usage: npx tsx scripts/rotate-vault-key.ts --database-url URL --reason "TEXT"

Re-encrypt the vault from VAULT_PREVIOUS_KEY (version VAULT_PREVIOUS_KEY_VERSION) to VAULT_KEY
(version VAULT_KEY_VERSION). Tokens do not change. Safe to run again; audited.

  --database-url URL   a role with pii_vault_admin (scripts/vault-roles.sql)  [env DATABASE_URL]
  --reason TEXT        why (default "key rotation")
  --batch-size N       entries per transaction (default 1000)
  -h, --help           show this help

Exit codes: 0 done, 1 runtime failure (an entry does not open), 2 usage or key error.
`;

/** What a rotation did. */
export interface RotationOutcome {
  reencrypted: number;
  /** The previous version's keyring row was deleted (no entry of it is left). */
  retired: boolean;
}

const SealedRow = Type.Object({ token: Type.String(), field: Type.String(), sealed: Type.String() });
const sqlSealedRow = sql.type(toStandardSchema(SealedRow));

/** Make sure the keyring holds the current version, wrapping the token key the previous one opens. */
async function addKeyringVersion(pool: DatabasePool, current: VaultKey, previous: VaultKey): Promise<void> {
  await pool.transaction(async (tx) => {
    await tx.query(sql.unsafe`SELECT pg_advisory_xact_lock(hashtext('sqs-login-masker vault keyring'))`);
    const rows = await tx.any(sqlKeyringRow`
      SELECT key_version, encode(wrapped_token_key, 'base64') AS wrapped_token_key FROM pii_vault.keyring`);
    const newRow = rows.find((r) => r.key_version === current.version);
    const oldRow = rows.find((r) => r.key_version === previous.version);
    if (newRow) {
      const tokenKey = openKeyringRow(current, newRow.wrapped_token_key);
      if (oldRow && !openKeyringRow(previous, oldRow.wrapped_token_key).equals(tokenKey)) {
        throw new VaultError(`Keyring versions ${previous.version} and ${current.version} hold different token keys: refusing to mix them`);
      }
      return;
    }
    if (!oldRow) {
      throw new ConfigError(`The vault keyring holds neither version ${previous.version} nor ${current.version}: check VAULT_PREVIOUS_KEY_VERSION and VAULT_KEY_VERSION`);
    }
    await insertKeyringRow(tx, current, openKeyringRow(previous, oldRow.wrapped_token_key));
  });
}

/**
 * Re-encrypt the entries of `keys.previous` under `keys.current`, then retire the previous version.
 *
 * @throws {ConfigError} when a key does not open its keyring version
 * @throws {VaultError} when an entry does not open under the previous key (it is left as it is)
 */
export async function rotateVaultKey(
  pool: DatabasePool,
  keys: { current: VaultKey; previous: VaultKey },
  options: { reason: string; osUser: string; batchSize?: number },
): Promise<RotationOutcome> {
  const { current, previous } = keys;
  await addKeyringVersion(pool, current, previous);
  let reencrypted = 0;
  for (;;) {
    const count = await pool.transaction(async (tx) => {
      const rows = await tx.any(sqlSealedRow`
        SELECT token, field, encode(sealed, 'base64') AS sealed FROM pii_vault.entries
        WHERE key_version = ${previous.version}
        LIMIT ${options.batchSize ?? 1000} FOR UPDATE SKIP LOCKED`);
      if (rows.length === 0) return 0;
      const tuples = rows.map(({ token, field, sealed }) => {
        let value: string;
        try {
          value = decryptEntry(previous, field, token, Buffer.from(sealed, "base64"));
        } catch (error) {
          if (!(error instanceof VaultDecryptError)) throw error;
          throw new VaultError(`The vault entry for ${token} does not open under key version ${previous.version} (changed after it was written?): rotation stopped, nothing of this batch changed`);
        }
        return [token, encryptEntry(current, field, token, value).toString("base64")];
      });
      await tx.query(sql.unsafe`
        UPDATE pii_vault.entries e SET key_version = ${current.version}, sealed = decode(t.sealed, 'base64')
        FROM ${sql.unnest(tuples, ["text", "text"])} AS t(token, sealed)
        WHERE e.token = t.token AND e.key_version = ${previous.version}`);
      return rows.length;
    });
    if (count === 0) break;
    reencrypted += count;
  }
  return await pool.transaction(async (tx) => {
    const left = await tx.oneFirst(sql.unsafe`
      SELECT count(*)::int FROM pii_vault.entries WHERE key_version = ${previous.version}`) as number;
    const retired = left === 0;
    if (retired) await tx.query(sql.unsafe`DELETE FROM pii_vault.keyring WHERE key_version = ${previous.version}`);
    await writeAudit(tx, {
      action: "rotate", reason: options.reason, osUser: options.osUser,
      detail: `from=${previous.version} to=${current.version} reencrypted=${reencrypted} retired=${retired}`,
    });
    return { reencrypted, retired };
  });
}

function parseRotateArgs(argv: readonly string[], env: Record<string, string | undefined>): VaultArgs {
  const args = parseVaultArgs(argv, env, { flags: { "batch-size": { type: "string" } }, reasonOptional: true });
  if (args.help) return args;
  const size = args.values["batch-size"] as string | undefined;
  if (size !== undefined && (!/^\d+$/.test(size) || Number(size) < 1 || Number(size) > 100_000)) {
    throw new ConfigError(`--batch-size must be a whole number from 1 to 100000, got "${size}"`);
  }
  if (!parseVaultKeys(env).previous) {
    throw new ConfigError("VAULT_PREVIOUS_KEY is not set: rotation needs the old key there and the new one in VAULT_KEY");
  }
  return args;
}

async function main(argv: readonly string[], env: Record<string, string | undefined>): Promise<number> {
  return await runVaultCommand(argv, env, HELP, parseRotateArgs, async (pool, args) => {
    const { current, previous } = parseVaultKeys(env);
    const size = args.values["batch-size"] as string | undefined;
    const outcome = await rotateVaultKey(pool, { current, previous: previous! }, {
      reason: args.reason || "key rotation", osUser: osUserName(env), batchSize: size ? Number(size) : undefined,
    });
    process.stdout.write(
      `rotated: reencrypted=${outcome.reencrypted} from_version=${previous!.version} to_version=${current.version} ` +
      `${outcome.retired ? "previous_version_retired" : "previous_version_kept (entries of it remain: run again)"}\n`,
    );
  });
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2), process.env);
}
