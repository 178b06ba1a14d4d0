/**
 * `vault`: a deterministic token in the row, the original encrypted in a vault table.
 *
 * ```sh
 * VAULT_KEY=$(openssl rand -hex 32) npx tsx mod.ts --strategy vault --drain ...
 * npx tsx scripts/recover.ts --database-url URL --reason "ticket 42" vlt1:...
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
 * - **Writes** happen in the batch's transaction (`persist`), with `ON CONFLICT DO NOTHING`,
 *   which needs only INSERT: the loading role never needs to read the vault.
 *
 * Recovery, erasure and rotation live in `scripts/` (see docs/vault.md). `node:crypto`
 * only, so it runs unchanged under Deno.
 *
 * @module
 */
import { createCipheriv, createDecipheriv, createHmac, createSecretKey, hkdfSync, type KeyObject, randomBytes } from "node:crypto";
import { Type } from "@sinclair/typebox";
import { type DatabasePool, type DatabaseTransactionConnection, sql } from "slonik";
import {
  ConfigError, describeDatabaseError, FatalError, type MaskedValue, type MaskStrategy, type PiiField, type StrategyOptions, toStandardSchema,
} from "../mod.ts";

/** At least as many key bytes as AES-256 and HMAC-SHA-256 want. */
export const MIN_KEY_BYTES = 32;
/** Every token starts so: recognisable in a column, and versioned should the scheme change. */
export const TOKEN_PREFIX = "vlt1:";
/** What `forget.ts` leaves in a masked column: no token, nothing to recover. */
export const ERASED_MARKER = "erased";

const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const HKDF_SALT = "sqs-login-masker/vault";

/** A version of `VAULT_KEY`, with the two keys derived from it. Never log it. */
export interface VaultKey {
  version: number;
  /** Wraps the token key in the keyring. */
  wrapKey: Buffer;
  /** Derives the per-token keys that encrypt entries (a KeyObject: imported once, used per value). */
  entryKey: KeyObject;
}

/** The current key (writes), and the previous one while a rotation is under way. */
export interface VaultKeys {
  current: VaultKey;
  previous?: VaultKey;
}

/**
 * Derive a vault key from the secret's UTF-8 bytes. HKDF with distinct labels keeps the
 * wrapping and entry keys independent of each other.
 */
export function deriveVaultKey(secret: string, version: number): VaultKey {
  const ikm = Buffer.from(secret, "utf8");
  const derive = (label: string) => Buffer.from(hkdfSync("sha256", ikm, HKDF_SALT, label, 32));
  return { version, wrapKey: derive("keyring-wrap"), entryKey: createSecretKey(derive("entry-encryption")) };
}

function parseSecret(env: Record<string, string | undefined>, variable: string): string | undefined {
  const raw = env[variable];
  if (raw === undefined || raw === "") return undefined;
  const bytes = Buffer.byteLength(raw, "utf8");
  if (bytes < MIN_KEY_BYTES) {
    throw new ConfigError(`${variable} is ${bytes} bytes; it must be at least ${MIN_KEY_BYTES} (e.g. ${variable}=$(openssl rand -hex 32))`);
  }
  return raw;
}

function parseVersion(raw: string | undefined, variable: string, fallback: number): number {
  if (raw === undefined || raw.trim() === "") return fallback;
  const version = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || version < 1 || version > 2_147_483_647) {
    throw new ConfigError(`${variable} must be a whole number from 1, got "${raw}"`);
  }
  return version;
}

/**
 * Read `VAULT_KEY` (at least 32 bytes) and `VAULT_KEY_VERSION` (default 1), and, during a
 * rotation, `VAULT_PREVIOUS_KEY` and `VAULT_PREVIOUS_KEY_VERSION` (default one less).
 *
 * @throws {ConfigError} for a missing or short key or a bad version; never echoes a key
 */
export function parseVaultKeys(env: Record<string, string | undefined>): VaultKeys {
  const secret = parseSecret(env, "VAULT_KEY");
  if (secret === undefined) {
    throw new ConfigError("VAULT_KEY is not set: the vault needs a secret of at least 32 bytes (e.g. VAULT_KEY=$(openssl rand -hex 32))");
  }
  const version = parseVersion(env.VAULT_KEY_VERSION, "VAULT_KEY_VERSION", 1);
  const keys: VaultKeys = { current: deriveVaultKey(secret, version) };
  const previous = parseSecret(env, "VAULT_PREVIOUS_KEY");
  if (previous !== undefined) {
    const previousVersion = parseVersion(env.VAULT_PREVIOUS_KEY_VERSION, "VAULT_PREVIOUS_KEY_VERSION", version - 1);
    if (previousVersion === version || previousVersion < 1) {
      throw new ConfigError(`VAULT_PREVIOUS_KEY_VERSION must name another version than VAULT_KEY_VERSION (${version})`);
    }
    keys.previous = deriveVaultKey(previous, previousVersion);
  }
  return keys;
}

/** The key of a given version, if configured. */
export function findVaultKey(keys: VaultKeys, version: number): VaultKey | undefined {
  return [keys.current, keys.previous].find((key) => key?.version === version);
}

/**
 * The token for a value: deterministic per (field, value) under the token key.
 *
 * @returns `vlt1:` and 43 base64url characters
 */
export function createToken(tokenKey: KeyObject | Uint8Array, field: PiiField, value: string): string {
  return TOKEN_PREFIX + createHmac("sha256", tokenKey).update(`${field}\0${value}`, "utf8").digest("base64url");
}

/** True for text shaped like a vault token. */
export function isToken(text: string): boolean {
  return /^vlt1:[A-Za-z0-9_-]{43}$/.test(text);
}

// ---------------------------------------------------------------------------------------
// Sealing: AES-256-GCM, nonce || ciphertext || tag
// ---------------------------------------------------------------------------------------

/** Raised when a ciphertext does not open: wrong key, or changed since it was written. */
export class VaultDecryptError extends Error {
  override name = "VaultDecryptError";
}

function seal(key: Uint8Array, plaintext: Uint8Array, aad: string): Buffer {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv("aes-256-gcm", key, nonce);
  cipher.setAAD(Buffer.from(aad, "utf8"));
  return Buffer.concat([nonce, cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
}

function open(key: Uint8Array, sealed: Uint8Array, aad: string): Buffer {
  if (sealed.length < NONCE_BYTES + TAG_BYTES) throw new VaultDecryptError("ciphertext is truncated");
  const nonce = sealed.subarray(0, NONCE_BYTES);
  const tag = sealed.subarray(sealed.length - TAG_BYTES);
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, nonce);
    decipher.setAAD(Buffer.from(aad, "utf8"));
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES)), decipher.final()]);
  } catch {
    // node's message ("Unsupported state or unable to authenticate data") helps nobody.
    throw new VaultDecryptError("authentication failed");
  }
}

/** Each token gets its own key, so no single AES key meets the random-nonce limit of 2^32 uses. */
function entryKeyFor(key: VaultKey, token: string): Buffer {
  return createHmac("sha256", key.entryKey).update(token, "utf8").digest();
}

/** Binds a ciphertext to its entry: moved to another token or field, it no longer opens. */
function entryAad(field: string, token: string): string {
  return `${TOKEN_PREFIX}entry\0${field}\0${token}`;
}

/** Binds a wrapped token key to its version. */
function keyringAad(version: number): string {
  return `${TOKEN_PREFIX}keyring\0${version}`;
}

/**
 * Encrypt a value for its vault entry.
 *
 * @returns nonce || ciphertext || tag
 */
export function encryptEntry(key: VaultKey, field: string, token: string, value: string): Buffer {
  return seal(entryKeyFor(key, token), Buffer.from(value, "utf8"), entryAad(field, token));
}

/**
 * Decrypt a vault entry.
 *
 * @throws {VaultDecryptError} when the key is wrong or the entry was changed or moved
 */
export function decryptEntry(key: VaultKey, field: string, token: string, sealed: Uint8Array): string {
  return open(entryKeyFor(key, token), sealed, entryAad(field, token)).toString("utf8");
}

/** Wrap the token key for the keyring row of `key.version`. */
export function wrapTokenKey(key: VaultKey, tokenKey: Uint8Array): Buffer {
  return seal(key.wrapKey, tokenKey, keyringAad(key.version));
}

/**
 * Unwrap the token key from a keyring row.
 *
 * @throws {VaultDecryptError} when `key` is not the key of that version
 */
export function unwrapTokenKey(key: VaultKey, wrapped: Uint8Array): Buffer {
  return open(key.wrapKey, wrapped, keyringAad(key.version));
}

// ---------------------------------------------------------------------------------------
// The vault in Postgres
// ---------------------------------------------------------------------------------------

/**
 * The vault's tables. The audit table refuses UPDATE, DELETE and TRUNCATE for everyone,
 * its owner included (who would have to drop the trigger first, itself a visible act).
 */
const VAULT_DDL = [
  sql.unsafe`CREATE SCHEMA IF NOT EXISTS pii_vault`,
  sql.unsafe`REVOKE ALL ON SCHEMA pii_vault FROM PUBLIC`,
  sql.unsafe`
    CREATE TABLE IF NOT EXISTS pii_vault.entries(
      token varchar(256) PRIMARY KEY,
      field varchar(32) NOT NULL,
      key_version integer NOT NULL,
      sealed bytea NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now())`,
  sql.unsafe`
    CREATE TABLE IF NOT EXISTS pii_vault.keyring(
      key_version integer PRIMARY KEY,
      wrapped_token_key bytea NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now())`,
  sql.unsafe`
    CREATE TABLE IF NOT EXISTS pii_vault.audit(
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      at timestamptz NOT NULL DEFAULT now(),
      db_user text NOT NULL DEFAULT session_user,
      client_addr inet DEFAULT inet_client_addr(),
      os_user text NOT NULL,
      action text NOT NULL CHECK (action IN ('recover', 'forget', 'rotate')),
      reason text NOT NULL CHECK (btrim(reason) <> ''),
      tokens text[] NOT NULL DEFAULT '{}',
      user_id text,
      detail text)`,
  sql.unsafe`
    CREATE OR REPLACE FUNCTION pii_vault.refuse_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      RAISE EXCEPTION 'pii_vault.audit is append-only' USING ERRCODE = '42501';
    END $$`,
  sql.unsafe`
    CREATE OR REPLACE TRIGGER audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON pii_vault.audit
    FOR EACH STATEMENT EXECUTE FUNCTION pii_vault.refuse_audit_change()`,
];

const KeyringRow = Type.Object({ key_version: Type.Integer(), wrapped_token_key: Type.String() });
/** Keyring rows, wrapped keys as base64 (Slonik hands bytea over as text most simply so). */
export const sqlKeyringRow = sql.type(toStandardSchema(KeyringRow));

/**
 * Create the vault schema and tables when absent (only then: creating needs privileges a
 * loading role set up by scripts/vault-roles.sql does not have).
 */
export async function ensureVaultTables(pool: DatabasePool): Promise<void> {
  await pool.transaction(async (tx) => {
    await tx.query(sql.unsafe`SELECT pg_advisory_xact_lock(hashtext('sqs-login-masker vault schema'))`);
    const present = await tx.oneFirst(sql.unsafe`
      SELECT to_regclass('pii_vault.entries') IS NOT NULL AND to_regclass('pii_vault.keyring') IS NOT NULL
         AND to_regclass('pii_vault.audit') IS NOT NULL`);
    if (present) return;
    for (const statement of VAULT_DDL) await tx.query(statement);
  });
}

/**
 * Load the token key for the current key version, making one if the keyring is empty.
 *
 * @throws {ConfigError} when `VAULT_KEY` does not open its keyring version, or the version is absent
 * @throws {FatalError} when the keyring is empty and this role may not fill it
 */
export async function loadTokenKey(pool: DatabasePool, keys: VaultKeys): Promise<Buffer> {
  return await pool.transaction(async (tx) => {
    await tx.query(sql.unsafe`SELECT pg_advisory_xact_lock(hashtext('sqs-login-masker vault keyring'))`);
    const rows = await tx.any(sqlKeyringRow`
      SELECT key_version, encode(wrapped_token_key, 'base64') AS wrapped_token_key FROM pii_vault.keyring`);
    const { current } = keys;
    if (rows.length === 0) {
      if (!await tx.oneFirst(sql.unsafe`SELECT has_table_privilege('pii_vault.keyring', 'INSERT')`)) {
        throw new FatalError("The vault has no token key yet and this role may not create one: run the tool once as the database owner (see docs/vault.md)");
      }
      const tokenKey = randomBytes(32);
      await insertKeyringRow(tx, current, tokenKey);
      return tokenKey;
    }
    const row = rows.find((r) => r.key_version === current.version);
    if (!row) {
      const held = rows.map((r) => r.key_version).sort((a, b) => a - b).join(", ");
      throw new ConfigError(
        `VAULT_KEY_VERSION=${current.version} is not in the vault keyring (it holds version ${held}): set VAULT_KEY and VAULT_KEY_VERSION to a version it holds, or add this one with scripts/rotate-vault-key.ts`,
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
    throw new ConfigError(`VAULT_KEY is not the vault's key version ${key.version}: check VAULT_KEY and VAULT_KEY_VERSION`);
  }
}

/** Add the keyring row for `key.version`, wrapping the given token key. */
export async function insertKeyringRow(tx: DatabaseTransactionConnection, key: VaultKey, tokenKey: Uint8Array): Promise<void> {
  await tx.query(sql.unsafe`
    INSERT INTO pii_vault.keyring (key_version, wrapped_token_key)
    VALUES (${key.version}, decode(${wrapTokenKey(key, tokenKey).toString("base64")}, 'base64'))`);
}

/**
 * Write entries for the given masked values in the caller's transaction. Repeated values
 * are skipped by the primary key. `ON CONFLICT DO NOTHING` names no conflict target on
 * purpose: with one (`ON CONFLICT (token)`) Postgres demands SELECT on the table, without
 * one INSERT is enough, and the primary key is the only unique constraint here.
 */
export async function insertEntries(tx: DatabaseTransactionConnection, key: VaultKey, values: readonly MaskedValue[]): Promise<void> {
  const unique = new Map(values.map((v) => [v.masked, v]));
  if (unique.size === 0) return;
  const tuples = [...unique.values()].map(({ field, value, masked }) => [
    masked, field, key.version, encryptEntry(key, field, masked, value).toString("base64"),
  ]);
  await tx.query(sql.unsafe`
    INSERT INTO pii_vault.entries (token, field, key_version, sealed)
    SELECT token, field, key_version, decode(sealed, 'base64')
    FROM ${sql.unnest(tuples, ["text", "text", "int4", "text"])} AS t(token, field, key_version, sealed)
    ON CONFLICT DO NOTHING`);
}

/** The one line a loading role without the vault's grants gets, with the fix. */
async function createGrantError(pool: DatabasePool, reason: string): Promise<FatalError> {
  const role = await pool.oneFirst(sql.unsafe`SELECT current_user::text`);
  return new FatalError(`Role ${role} may not use the vault (${reason}): GRANT login_loader TO ${role}; see scripts/vault-roles.sql`);
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
  return {
    name: "vault",
    async setup(pool) {
      try {
        await ensureVaultTables(pool);
        tokenKey = createSecretKey(await loadTokenKey(pool, keys));
      } catch (error) {
        if (!/^42501/.test(describeDatabaseError(error))) throw error;
        throw await createGrantError(pool, describeDatabaseError(error));
      }
      if (!await pool.oneFirst(sql.unsafe`SELECT has_table_privilege('pii_vault.entries', 'INSERT')`)) {
        throw await createGrantError(pool, "no INSERT on pii_vault.entries");
      }
    },
    mask(value, field) {
      if (!tokenKey) throw new FatalError("The vault strategy was used before setup(pool) loaded its token key");
      return createToken(tokenKey, field, value);
    },
    async persist(tx, values) {
      await insertEntries(tx, keys.current, values);
    },
  };
}
