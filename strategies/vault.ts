/**
 * `vault`: a deterministic token in the row, the original sealed in a vault table, with
 * the keys split by role (docs/vault.md).
 *
 * ```sh
 * npx tsx mod.ts vault-keygen >> .env   # VAULT_TOKEN_KEY, VAULT_RECOVERY_PUBLIC_KEY, VAULT_RECOVERY_KEY
 * VAULT_TOKEN_KEY=... VAULT_RECOVERY_PUBLIC_KEY=... npx tsx mod.ts --strategy vault --drain ...
 * VAULT_RECOVERY_KEY=... sqs-login-masker recover --database-url URL --reason "ticket 42" --ticket T-42 vlt1:...
 * ```
 *
 * - **Token**: `vlt1:` + base64url(HMAC-SHA-256(token key, field NUL value)), 48 characters.
 *   Equal (field, value) pairs give equal tokens, so duplicates stay visible. The token key
 *   comes from `VAULT_TOKEN_KEY`, which only the loader holds: nobody else can test a guess.
 * - **Entry**: the value sealed to the recovery public key (`VAULT_RECOVERY_PUBLIC_KEY`):
 *   X25519 with an ephemeral key per batch, HKDF-SHA-256 per entry, AES-256-GCM with
 *   `field` + `token` as associated data. The loader can seal but not open; the recovery
 *   role (`VAULT_RECOVERY_KEY`) can open but not make tokens. Each entry records the keyring
 *   version (the public key) it was sealed to.
 * - **Writes** happen in the batch's transaction (`persist`, handed only the values of
 *   messages new to the table), through `pii_vault.write_entries`, which answers nothing:
 *   the loading role can neither read the vault nor learn what it holds. A token this
 *   process wrote in a committed batch is not sealed and sent again.
 * - **Every other role goes through functions too** (recovery, erasure, rotation), owned
 *   by a role nobody logs in as; who and when are the database's to record.
 *
 * Recovery, erasure and rotation are subcommands (`src/commands/`; see docs/vault.md). `node:crypto`
 * only, so it runs unchanged under Deno.
 *
 * @module
 */
import { Type } from "@sinclair/typebox";
import {
  type ArraySqlToken,
  type DatabasePool,
  type DatabaseTransactionConnection,
  type QuerySqlToken,
  sql,
  type ValueExpression,
} from "slonik";
import type { StandardSchemaV1 } from "@standard-schema/spec";
import { keyFingerprint, type MaskedValue, type MaskStrategy, type StrategyOptions } from "../src/contract.ts";
import { ConfigError, describeDatabaseError, errorCode, FatalError } from "../src/errors.ts";
import { toStandardSchema } from "../src/typed-sql.ts";
import {
  createEntrySealer,
  createToken,
  parseRecoveryPublicKey,
  parseTokenKey,
  type RecoveryPublicKey,
} from "./_vault-crypto.ts";
import { RETIRED_KEY_SQLSTATE, SINGLE_KEY_VAULT_MARK, VAULT_SCHEMA_MARK, vaultDdl } from "./_vault-schema.ts";

const KeyringRow = Type.Object({
  key_version: Type.Integer(),
  public_key: Type.String(),
  retired: Type.Boolean(),
  emptied: Type.Boolean(),
});
/** A keyring row, its public key as base64url (as its variable spells it). */
export interface KeyringRowValue {
  key_version: number;
  public_key: string;
  retired: boolean;
  emptied: boolean;
}
type KeyringQuery = QuerySqlToken<StandardSchemaV1<KeyringRowValue, KeyringRowValue>>;
/** Keyring rows, public keys as base64url (as their variables spell them). */
export const sqlKeyringRow: (template: TemplateStringsArray, ...values: ValueExpression[]) => KeyringQuery = sql
  .type(toStandardSchema(KeyringRow));
/** Every keyring row, as {@link sqlKeyringRow} types it. */
export const SELECT_KEYRING: KeyringQuery = sqlKeyringRow`
  SELECT key_version, rtrim(translate(encode(public_key, 'base64'), '+/', '-_'), '=') AS public_key,
         retired_at IS NOT NULL AS retired, emptied_at IS NOT NULL AS emptied
  FROM pii_vault.keyring ORDER BY key_version`;

/** The versions that take writes, for a message naming them. */
export function liveVersions(rows: ReadonlyArray<{ key_version: number; retired: boolean }>): string {
  return rows.filter((r) => !r.retired).map((r) => r.key_version).join(", ") || "none";
}

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
    if (state.present && state.mark === SINGLE_KEY_VAULT_MARK) {
      throw new FatalError(
        "Schema pii_vault was made with the single VAULT_KEY, whose holder could both open entries and make tokens: this version splits the keys, and its tokens differ; load into a new database (or move pii_vault and user_logins aside as their owner) with the keys of sqs-login-masker vault-keygen (docs/vault.md)",
      );
    }
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
 * The keyring version of the configured public key, adding it as version 1 if the keyring is empty.
 *
 * @throws {ConfigError} when the key is not in the keyring, or retired
 * @throws {FatalError} when the keyring is empty and this role may not fill it
 */
export async function loadKeyVersion(pool: DatabasePool, publicKey: RecoveryPublicKey): Promise<number> {
  return await pool.transaction(async (tx) => {
    await tx.query(sql.unsafe`SELECT pg_advisory_xact_lock(hashtext('sqs-login-masker vault keyring'))`);
    const rows = await tx.any(SELECT_KEYRING);
    if (rows.length === 0) {
      if (!await tx.oneFirst(sql.unsafe`SELECT has_table_privilege('pii_vault.keyring', 'INSERT')`)) {
        throw new FatalError(
          "The vault has no recovery public key yet and this role may not add one: run the tool once as the database owner (see docs/vault.md)",
        );
      }
      await tx.query(sql.unsafe`
        INSERT INTO pii_vault.keyring (key_version, public_key) VALUES (1, ${sql.binary(publicKey.raw)})`);
      return 1;
    }
    const row = rows.find((r) => r.public_key === publicKey.raw.toString("base64url"));
    if (row?.retired) {
      throw new ConfigError(
        `VAULT_RECOVERY_PUBLIC_KEY is keyring version ${row.key_version}, retired by a key rotation: set it to the public key of a current version (${
          liveVersions(rows)
        })`,
      );
    }
    if (!row) {
      throw new ConfigError(
        `VAULT_RECOVERY_PUBLIC_KEY is not in the vault keyring (current version ${
          liveVersions(rows)
        }): set it to the keyring's public key, or add it with sqs-login-masker rotate-vault-key`,
      );
    }
    return row.key_version;
  });
}

/** Ciphertexts as a Postgres `bytea[]` parameter. */
export function byteaArray(values: readonly Uint8Array[]): ArraySqlToken<"bytea"> {
  return sql.array(values.map((v) => Buffer.from(v.buffer, v.byteOffset, v.byteLength)), "bytea");
}

/**
 * Write entries for the given masked values in the caller's transaction, through
 * `pii_vault.write_entries`: a value already there, or erased, is skipped without a word.
 *
 * @throws the database's error, with SQLSTATE {@link RETIRED_KEY_SQLSTATE} when `version` is retired
 */
export async function writeEntries(
  tx: DatabaseTransactionConnection,
  version: number,
  publicKey: RecoveryPublicKey,
  values: readonly MaskedValue[],
): Promise<void> {
  const unique = [...new Map(values.map((v) => [v.masked, v])).values()];
  if (unique.length === 0) return;
  const seal = createEntrySealer(publicKey);
  await tx.query(sql.unsafe`
    SELECT pii_vault.write_entries(${version}, ${sql.array(unique.map((v) => v.masked), "text")},
      ${sql.array(unique.map((v) => v.field), "text")},
      ${byteaArray(unique.map(({ field, value, masked }) => seal(field, masked, value)))})`);
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
 * Create the strategy from `VAULT_TOKEN_KEY` and `VAULT_RECOVERY_PUBLIC_KEY` (see
 * {@link parseTokenKey}). `setup(pool)` must run before `persist`: it creates the vault
 * when absent and finds the public key's keyring version.
 *
 * @throws {ConfigError} when a key is missing or malformed
 */
export function create({ env }: StrategyOptions): MaskStrategy {
  const tokenKey = parseTokenKey(env);
  const publicKey = parseRecoveryPublicKey(env);
  const fingerprint = keyFingerprint(tokenKey.raw);
  let version: number | undefined;
  const written = createRecentSet(WRITTEN_TOKENS_LIMIT);
  return {
    name: "vault",
    // The token key's: it makes every token; a rotation of the recovery key pair keeps it.
    fingerprint,
    async setup(pool) {
      try {
        await ensureVault(pool);
        version = await loadKeyVersion(pool, publicKey);
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
      return createToken(tokenKey.key, field, value);
    },
    async persist(tx, values) {
      if (version === undefined) throw new FatalError("The vault strategy was used before setup(pool) found its key");
      const unwritten = values.filter((v) => !written.has(v.masked));
      if (unwritten.length === 0) return;
      try {
        await writeEntries(tx, version, publicKey, unwritten);
      } catch (error) {
        if (errorCode(error) !== RETIRED_KEY_SQLSTATE) throw error;
        throw new FatalError(
          `Vault key version ${version} was retired by a key rotation: restart the loader with VAULT_RECOVERY_PUBLIC_KEY of a current version (sqs-login-masker rotate-vault-key, docs/vault.md)`,
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
