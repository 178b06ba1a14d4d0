/**
 * `vault`: a deterministic token in the row, the original encrypted in a vault table.
 *
 * ```sh
 * VAULT_KEY=$(openssl rand -hex 32) npx tsx mod.ts --strategy vault --drain ...
 * sqs-login-masker recover --database-url URL --reason "ticket 42" --ticket T-42 vlt1:...
 * ```
 *
 * - **Token**: `vlt1:` + base64url(HMAC-SHA-256(token key, field NUL value)), 48 characters.
 *   Equal (field, value) pairs give equal tokens, so duplicates stay visible; without the
 *   token key nobody can test a guess. The token key is 32 random bytes made once per
 *   database and kept in `pii_vault.keyring` wrapped (AES-256-GCM) under a key derived from
 *   `VAULT_KEY`, so rotating `VAULT_KEY` re-wraps it and tokens never change.
 * - **Entry**: the value encrypted with AES-256-GCM under a per-token key derived from
 *   `VAULT_KEY` (HKDF, then HMAC with the token), a random 96-bit nonce, and `field` +
 *   `token` as associated data, so a ciphertext moved to another entry fails to open.
 *   Each entry records the key version that encrypted it.
 * - **Writes** happen in the batch's transaction (`persist`, handed only the values of
 *   messages new to the table), through `pii_vault.write_entries`, which answers nothing:
 *   the loading role can neither read the vault nor learn what it holds. A token this
 *   process wrote in a committed batch is not encrypted and sent again.
 * - **Every other role goes through functions too** (recovery, erasure, rotation), owned
 *   by a role nobody logs in as; who and when are the database's to record.
 *
 * Recovery, erasure and rotation are subcommands (`src/commands/`; see docs/vault.md). `node:crypto`
 * only, so it runs unchanged under Deno.
 *
 * @module
 */
import { createSecretKey, type KeyObject, randomBytes } from "node:crypto";
import { Type } from "@sinclair/typebox";
import { type DatabasePool, type DatabaseTransactionConnection, sql } from "slonik";
import { keyFingerprint, type MaskedValue, type MaskStrategy, type StrategyOptions } from "../src/contract.ts";
import { ConfigError, describeDatabaseError, errorCode, FatalError } from "../src/errors.ts";
import { toStandardSchema } from "../src/typed-sql.ts";
import {
  createToken,
  encryptEntry,
  parseVaultKeys,
  unwrapTokenKey,
  type VaultKey,
  type VaultKeys,
  wrapTokenKey,
} from "./_vault-crypto.ts";
import { RETIRED_KEY_SQLSTATE, VAULT_SCHEMA_MARK, vaultDdl } from "./_vault-schema.ts";

const KeyringRow = Type.Object({
  key_version: Type.Integer(),
  wrapped_token_key: Type.Union([Type.String(), Type.Null()]),
  retired: Type.Boolean(),
});
/** Keyring rows, wrapped keys as base64 (Slonik hands bytea over as text most simply so); null once retired. */
export const sqlKeyringRow = sql.type(toStandardSchema(KeyringRow));
/** Every keyring row, as {@link sqlKeyringRow} types it. */
export const SELECT_KEYRING = sqlKeyringRow`
  SELECT key_version, encode(wrapped_token_key, 'base64') AS wrapped_token_key, retired_at IS NOT NULL AS retired
  FROM pii_vault.keyring ORDER BY key_version`;

const VaultState = Type.Object({
  present: Type.Boolean(),
  mark: Type.Union([Type.String(), Type.Null()]),
  user_logins_schema: Type.String(),
});
const sqlVaultState = sql.type(toStandardSchema(VaultState));

/**
 * Create the vault when absent (only then: creating needs privileges a loading role set up
 * by scripts/vault-roles.sql does not have). `user_logins` must exist.
 *
 * @throws {FatalError} when the vault was made by an earlier version of the tool
 */
export async function ensureVault(pool: DatabasePool): Promise<void> {
  await pool.transaction(async (tx) => {
    await tx.query(sql.unsafe`SELECT pg_advisory_xact_lock(hashtext('sqs-login-masker vault schema'))`);
    const state = await tx.one(sqlVaultState`
      SELECT to_regnamespace('pii_vault') IS NOT NULL AS present,
             obj_description(to_regnamespace('pii_vault'), 'pg_namespace') AS mark,
             (SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.oid = 'user_logins'::regclass) AS user_logins_schema`);
    if (state.present && state.mark === VAULT_SCHEMA_MARK) return;
    if (state.present) {
      throw new FatalError(
        "Schema pii_vault was made by an earlier version of this tool, whose grants let roles read the vault directly: move it aside as its owner (ALTER SCHEMA pii_vault RENAME TO pii_vault_old) and run the tool again (docs/vault.md)",
      );
    }
    for (const statement of vaultDdl(sql.identifier([state.user_logins_schema, "user_logins"]))) {
      await tx.query(statement);
    }
  });
}

/**
 * Load the token key for the current key version, making one if the keyring is empty.
 *
 * @throws {ConfigError} when `VAULT_KEY` does not open its keyring version, or the version is absent or retired
 * @throws {FatalError} when the keyring is empty and this role may not fill it
 */
export async function loadTokenKey(pool: DatabasePool, keys: VaultKeys): Promise<Buffer> {
  return await pool.transaction(async (tx) => {
    await tx.query(sql.unsafe`SELECT pg_advisory_xact_lock(hashtext('sqs-login-masker vault keyring'))`);
    const rows = await tx.any(SELECT_KEYRING);
    const { current } = keys;
    if (rows.length === 0) {
      if (!await tx.oneFirst(sql.unsafe`SELECT has_table_privilege('pii_vault.keyring', 'INSERT')`)) {
        throw new FatalError(
          "The vault has no token key yet and this role may not create one: run the tool once as the database owner (see docs/vault.md)",
        );
      }
      const tokenKey = randomBytes(32);
      await tx.query(sql.unsafe`
        INSERT INTO pii_vault.keyring (key_version, wrapped_token_key)
        VALUES (${current.version}, decode(${wrapTokenKey(current, tokenKey).toString("base64")}, 'base64'))`);
      return tokenKey;
    }
    const live = rows.filter((r) => !r.retired).map((r) => r.key_version).join(", ");
    const row = rows.find((r) => r.key_version === current.version);
    if (row?.retired) {
      throw new ConfigError(
        `VAULT_KEY_VERSION=${current.version} was retired by a key rotation: set VAULT_KEY and VAULT_KEY_VERSION to a current version (${live})`,
      );
    }
    if (!row?.wrapped_token_key) {
      throw new ConfigError(
        `VAULT_KEY_VERSION=${current.version} is not in the vault keyring (it holds version ${live}): set VAULT_KEY and VAULT_KEY_VERSION to a version it holds, or add this one with sqs-login-masker rotate-vault-key`,
      );
    }
    return openKeyringRow(current, row.wrapped_token_key);
  });
}

/** Unwrap a keyring row, turning a failure into the one line a user can act on. */
export function openKeyringRow(key: VaultKey, wrappedBase64: string): Buffer {
  try {
    return unwrapTokenKey(key, Buffer.from(wrappedBase64, "base64"));
  } catch {
    throw new ConfigError(
      `VAULT_KEY is not the vault's key version ${key.version}: check VAULT_KEY and VAULT_KEY_VERSION`,
    );
  }
}

/** Ciphertexts as a Postgres `bytea[]` parameter. */
export function byteaArray(values: readonly Uint8Array[]) {
  return sql.array(values.map((v) => Buffer.from(v.buffer, v.byteOffset, v.byteLength)), "bytea");
}

/**
 * Write entries for the given masked values in the caller's transaction, through
 * `pii_vault.write_entries`: a value already there, or erased, is skipped without a word.
 *
 * @throws the database's error, with SQLSTATE {@link RETIRED_KEY_SQLSTATE} when `key` is retired
 */
export async function writeEntries(
  tx: DatabaseTransactionConnection,
  key: VaultKey,
  values: readonly MaskedValue[],
): Promise<void> {
  const unique = [...new Map(values.map((v) => [v.masked, v])).values()];
  if (unique.length === 0) return;
  await tx.query(sql.unsafe`
    SELECT pii_vault.write_entries(${key.version}, ${sql.array(unique.map((v) => v.masked), "text")},
      ${sql.array(unique.map((v) => v.field), "text")},
      ${byteaArray(unique.map(({ field, value, masked }) => encryptEntry(key, field, masked, value)))})`);
}

/**
 * A set that keeps at most `limit` keys, the recently used ones: two generations of up to
 * `limit / 2` keys each. When the young one is full the old one is dropped whole; a key
 * found in the old one (`has` counts as a use) moves to the young one. No key is ever
 * deleted one by one: a JavaScript Set keeps a deleted key's slot until it rehashes, and
 * evicting the oldest of one large Set walked over those slots every time.
 */
export function createRecentSet(
  limit: number,
): { has(key: string): boolean; add(key: string): void; readonly size: number } {
  const generation = Math.max(1, Math.floor(limit / 2));
  let young = new Set<string>();
  let old = new Set<string>();
  const add = (key: string) => {
    young.add(key);
    if (young.size >= generation) {
      old = young;
      young = new Set();
    }
  };
  return {
    has(key) {
      if (young.has(key)) return true;
      if (!old.has(key)) return false;
      add(key);
      return true;
    },
    add,
    get size() {
      return young.size + old.size;
    },
  };
}

/**
 * Tokens this process wrote in a committed batch, so a value seen again is not encrypted
 * and sent again. 100 000 tokens of 48 characters: about 10 MB.
 */
export const WRITTEN_TOKENS_LIMIT = 100_000;

/** The one line a loading role without the vault's grants gets, with the fix. */
async function createGrantError(pool: DatabasePool, reason: string): Promise<FatalError> {
  const role = await pool.oneFirst(sql.unsafe`SELECT current_user::text`);
  return new FatalError(
    `Role ${role} may not use the vault (${reason}): GRANT login_loader TO ${role}; see sqs-login-masker vault-roles`,
  );
}

/**
 * Create the strategy from `VAULT_KEY` (see {@link parseVaultKeys}). `setup(pool)` must run
 * before `mask`: it creates the vault when absent and loads the token key.
 *
 * @throws {ConfigError} when the key is missing or shorter than 32 bytes
 */
export function create({ env }: StrategyOptions): MaskStrategy {
  const keys = parseVaultKeys(env);
  // A KeyObject made once: createHmac with raw bytes imports the key again on every call.
  let tokenKey: KeyObject | undefined;
  let fingerprint: string | undefined;
  const written = createRecentSet(WRITTEN_TOKENS_LIMIT);
  return {
    name: "vault",
    // The token key's: it makes every token, and a rotation of VAULT_KEY keeps it.
    get fingerprint() {
      return fingerprint;
    },
    async setup(pool) {
      try {
        await ensureVault(pool);
        const raw = await loadTokenKey(pool, keys);
        tokenKey = createSecretKey(raw);
        fingerprint = keyFingerprint(raw);
      } catch (error) {
        if (errorCode(error) !== "42501") throw error;
        throw await createGrantError(pool, describeDatabaseError(error));
      }
      if (
        !await pool.oneFirst(sql.unsafe`
        SELECT has_function_privilege('pii_vault.write_entries(integer, text[], text[], bytea[])', 'EXECUTE')`)
      ) {
        throw await createGrantError(pool, "no EXECUTE on pii_vault.write_entries");
      }
    },
    mask(value, field) {
      if (!tokenKey) throw new FatalError("The vault strategy was used before setup(pool) loaded its token key");
      return createToken(tokenKey, field, value);
    },
    async persist(tx, values) {
      const unwritten = values.filter((v) => !written.has(v.masked));
      if (unwritten.length === 0) return;
      try {
        await writeEntries(tx, keys.current, unwritten);
      } catch (error) {
        if (errorCode(error) !== RETIRED_KEY_SQLSTATE) throw error;
        throw new FatalError(
          `Vault key version ${keys.current.version} was retired by a key rotation: restart the loader with VAULT_KEY and VAULT_KEY_VERSION of a current version (sqs-login-masker rotate-vault-key, docs/vault.md)`,
          { cause: error },
        );
      }
      // Remembered only once the batch has committed: a rolled-back entry must be sent again.
      return () => {
        for (const v of unwritten) written.add(v.masked);
      };
    },
  };
}
