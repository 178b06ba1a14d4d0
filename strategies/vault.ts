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
 * - **Writes** happen in the batch's transaction (`persist`, handed only the values of
 *   messages new to the table), through `pii_vault.write_entries`, which answers nothing:
 *   the loading role can neither read the vault nor learn what it holds. A token this
 *   process wrote in a committed batch is not encrypted and sent again.
 * - **Every other role goes through functions too** (recovery, erasure, rotation), owned
 *   by a role nobody logs in as; who and when are the database's to record.
 *
 * Recovery, erasure and rotation live in `scripts/` (see docs/vault.md). `node:crypto`
 * only, so it runs unchanged under Deno.
 *
 * @module
 */
import { createCipheriv, createDecipheriv, createHmac, createSecretKey, hkdfSync, type KeyObject, randomBytes } from "node:crypto";
import { Type } from "@sinclair/typebox";
import { type DatabasePool, type DatabaseTransactionConnection, sql } from "slonik";
import type { MaskedValue, MaskStrategy, PiiField, StrategyOptions } from "../src/contract.ts";
import { ConfigError, describeDatabaseError, errorCode, FatalError } from "../src/errors.ts";
import { toStandardSchema } from "../src/typed-sql.ts";

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
    // Not echoed: a key pasted into the wrong variable would land in the logs.
    throw new ConfigError(`${variable} must be a whole number from 1 (the value is not shown, in case it is a key)`);
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
 * What marks a vault made by this version: the schema's comment. A vault without it was
 * made by an earlier version, whose grants let roles read and write the tables directly.
 */
export const VAULT_SCHEMA_MARK = "sqs-login-masker vault 2";
/** The SQLSTATE `pii_vault.write_entries` raises for a retired (or unknown) key version. */
export const RETIRED_KEY_SQLSTATE = "VK001";
/** How long a committed recovery request may be served, and its token list kept. */
const RECOVERY_REQUEST_LIFETIME = "10 minutes";
/** How long a rotation may go on under one committed request. */
const ROTATION_REQUEST_LIFETIME = "1 day";
/** The most tokens one recovery request may name. */
export const MAX_RECOVERY_TOKENS = 10_000;
/** A recovery's client-side failures the recovery role may report into the audit. */
export const RECOVERY_FAILURES = ["does_not_authenticate", "token_mismatch", "key_version_not_configured"] as const;
export type RecoveryFailure = (typeof RECOVERY_FAILURES)[number];

/**
 * The vault: tables only its owner reads, and the narrow functions every other role goes
 * through (scripts/vault-roles.sql grants each role its own). The functions are SECURITY
 * DEFINER with a fixed search_path and schema-qualified names, so a caller's objects never
 * stand in for ours. Who and when come from the database (`session_user`, `now()`).
 *
 * @param userLogins `user_logins`, schema-qualified, for erasure
 */
function vaultDdl(userLogins: ReturnType<typeof sql.identifier>) {
  const erased = sql.literalValue(ERASED_MARKER);
  const failures = sql.join(RECOVERY_FAILURES.map((f) => sql.literalValue(f)), sql.fragment`, `);
  return [
    sql.unsafe`CREATE SCHEMA pii_vault`,
    sql.unsafe`REVOKE ALL ON SCHEMA pii_vault FROM PUBLIC`,
    sql.unsafe`
      CREATE TABLE pii_vault.keyring(
        key_version integer PRIMARY KEY CHECK (key_version > 0),
        -- NULL once the version is retired: it then opens nothing here, and no entry is under it.
        wrapped_token_key bytea,
        created_at timestamptz NOT NULL DEFAULT now(),
        -- Set when a rotation starts: from then on nothing is written under this version.
        retired_at timestamptz,
        CHECK (wrapped_token_key IS NOT NULL OR retired_at IS NOT NULL))`,
    sql.unsafe`
      CREATE TABLE pii_vault.entries(
        token varchar(256) PRIMARY KEY,
        field varchar(32) NOT NULL,
        key_version integer NOT NULL,
        sealed bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now())`,
    // Tokens erased for good: never written again. No time, no user: they link to no one.
    sql.unsafe`CREATE TABLE pii_vault.tombstones(token varchar(256) PRIMARY KEY)`,
    sql.unsafe`
      CREATE TABLE pii_vault.audit(
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at timestamptz NOT NULL DEFAULT now(),
        db_user text NOT NULL DEFAULT session_user,
        client_addr inet DEFAULT inet_client_addr(),
        action text NOT NULL CHECK (action IN ('recover', 'forget', 'rotate')),
        outcome text NOT NULL CHECK (outcome IN ('requested', 'served', 'denied', 'failed', 'done')),
        -- Rows that answer a request name it; the request's row holds the reason and the ticket.
        request_id bigint,
        reason text,
        ticket text,
        -- Erasures only: whom. Never a token: the audit outlives erasure and cannot be edited.
        user_id text,
        detail text)`,
    sql.unsafe`
      CREATE TABLE pii_vault.requests(
        id bigint PRIMARY KEY,
        action text NOT NULL CHECK (action IN ('recover', 'rotate')),
        db_user text NOT NULL,
        requested_in xid8 NOT NULL,
        expires_at timestamptz NOT NULL,
        tokens text[],
        retiring integer,
        successor integer,
        reencrypted integer NOT NULL DEFAULT 0)`,
    sql.unsafe`
      CREATE FUNCTION pii_vault.refuse_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        RAISE EXCEPTION 'pii_vault.audit is append-only' USING ERRCODE = '42501';
      END $$`,
    sql.unsafe`
      CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON pii_vault.audit
      FOR EACH STATEMENT EXECUTE FUNCTION pii_vault.refuse_audit_change()`,
    // Why a request may not be served now, or NULL. A request row this transaction can see
    // was committed by another one, or inserted by this very transaction (a savepoint's
    // included): requested_in is the top-level id, "in progress" exactly in that case.
    sql.unsafe`
      CREATE FUNCTION pii_vault.refusal(request pii_vault.requests, wanted text) RETURNS text
      LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
        SELECT CASE
          WHEN request.id IS NULL THEN 'no such request (unknown, or expired)'
          WHEN request.action <> wanted THEN 'the request is not for ' || wanted
          WHEN request.db_user <> session_user THEN 'the request was made by another database user'
          WHEN request.expires_at < now() THEN 'the request has expired'
          WHEN pg_xact_status(request.requested_in) IS NOT DISTINCT FROM 'in progress'
            THEN 'the request is not committed: commit it in a transaction of its own first'
        END $$`,
    sql.unsafe`
      CREATE FUNCTION pii_vault.write_entries(version integer, tokens text[], fields text[], sealed bytea[])
      RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
      #variable_conflict use_column
      DECLARE
        live boolean;
      BEGIN
        -- An erasure holds SHARE ROW EXCLUSIVE while it deletes: waiting for it in a statement of
        -- its own lets the insert below, which takes its snapshot after, see its tombstones.
        LOCK TABLE pii_vault.entries IN ROW EXCLUSIVE MODE;
        -- FOR SHARE: retiring the version (an UPDATE of this row) waits for the batches writing
        -- under it, and every batch after sees it retired.
        SELECT k.retired_at IS NULL INTO live FROM pii_vault.keyring k
        WHERE k.key_version = write_entries.version FOR SHARE;
        IF live IS NOT TRUE THEN
          RAISE EXCEPTION 'vault key version % is retired or unknown', write_entries.version USING ERRCODE = 'VK001';
        END IF;
        -- No answer, no count: what is already there, or erased, looks like what is not.
        INSERT INTO pii_vault.entries (token, field, key_version, sealed)
        SELECT t.token, t.field, write_entries.version, t.sealed
        FROM unnest(write_entries.tokens, write_entries.fields, write_entries.sealed) AS t(token, field, sealed)
        WHERE NOT EXISTS (SELECT FROM pii_vault.tombstones d WHERE d.token = t.token)
        ON CONFLICT DO NOTHING;
      END $$`,
    sql.unsafe`
      CREATE FUNCTION pii_vault.request_recovery(reason text, ticket text, tokens text[]) RETURNS bigint
      LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
      #variable_conflict use_column
      DECLARE
        -- Each token once, in the order asked.
        wanted text[] := ARRAY(SELECT x.t FROM unnest(request_recovery.tokens) WITH ORDINALITY AS x(t, n)
                               WHERE x.t IS NOT NULL GROUP BY x.t ORDER BY min(x.n));
        new_id bigint;
      BEGIN
        IF coalesce(btrim(request_recovery.reason), '') = '' OR coalesce(btrim(request_recovery.ticket), '') = '' THEN
          RAISE EXCEPTION 'a recovery needs a reason and a ticket' USING ERRCODE = '22023';
        END IF;
        IF cardinality(wanted) NOT BETWEEN 1 AND ${sql.literalValue(String(MAX_RECOVERY_TOKENS))}::int THEN
          RAISE EXCEPTION 'a recovery names 1 to % tokens', ${sql.literalValue(String(MAX_RECOVERY_TOKENS))} USING ERRCODE = '22023';
        END IF;
        -- A request's tokens are kept no longer than it may be served.
        DELETE FROM pii_vault.requests q WHERE q.expires_at < now();
        INSERT INTO pii_vault.audit (action, outcome, reason, ticket, detail)
        VALUES ('recover', 'requested', request_recovery.reason, request_recovery.ticket, format('tokens=%s', cardinality(wanted)))
        RETURNING id INTO new_id;
        INSERT INTO pii_vault.requests (id, action, db_user, requested_in, expires_at, tokens)
        VALUES (new_id, 'recover', session_user, pg_current_xact_id(), now() + interval ${sql.literalValue(RECOVERY_REQUEST_LIFETIME)}, wanted);
        RETURN new_id;
      END $$`,
    // Denials and failures are rows, not errors: an error would roll back their audit rows.
    sql.unsafe`
      CREATE FUNCTION pii_vault.serve_recovery(request_id bigint)
      RETURNS TABLE(outcome text, detail text, token text, field text, key_version integer, sealed bytea)
      LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
      #variable_conflict use_column
      DECLARE
        request pii_vault.requests;
        refused text;
        missing text[];
      BEGIN
        SELECT * INTO request FROM pii_vault.requests q WHERE q.id = serve_recovery.request_id;
        refused := pii_vault.refusal(request, 'recover');
        IF refused IS NOT NULL THEN
          INSERT INTO pii_vault.audit (action, outcome, request_id, detail)
          VALUES ('recover', 'denied', serve_recovery.request_id, refused);
          RETURN QUERY SELECT 'denied'::text, refused, NULL::text, NULL::text, NULL::integer, NULL::bytea;
          RETURN;
        END IF;
        missing := ARRAY(SELECT w FROM unnest(request.tokens) AS w
                         WHERE NOT EXISTS (SELECT FROM pii_vault.entries e WHERE e.token = w));
        IF cardinality(missing) > 0 THEN
          INSERT INTO pii_vault.audit (action, outcome, request_id, detail)
          VALUES ('recover', 'failed', serve_recovery.request_id, format('missing=%s of %s', cardinality(missing), cardinality(request.tokens)));
          RETURN QUERY SELECT 'missing'::text, NULL::text, w, NULL::text, NULL::integer, NULL::bytea FROM unnest(missing) AS w;
          RETURN;
        END IF;
        INSERT INTO pii_vault.audit (action, outcome, request_id, detail)
        VALUES ('recover', 'served', serve_recovery.request_id, format('values=%s', cardinality(request.tokens)));
        RETURN QUERY SELECT 'served'::text, NULL::text, e.token::text, e.field::text, e.key_version, e.sealed
          FROM unnest(request.tokens) WITH ORDINALITY AS w(t, n) JOIN pii_vault.entries e ON e.token = w.t ORDER BY w.n;
      END $$`,
    sql.unsafe`
      CREATE FUNCTION pii_vault.report_recovery_failure(request_id bigint, failure text) RETURNS void
      LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
      #variable_conflict use_column
      BEGIN
        IF report_recovery_failure.failure IS NULL OR report_recovery_failure.failure NOT IN (${failures}) THEN
          RAISE EXCEPTION 'not a recovery failure this function records' USING ERRCODE = '22023';
        END IF;
        IF NOT EXISTS (SELECT FROM pii_vault.audit a WHERE a.id = report_recovery_failure.request_id
                       AND a.action = 'recover' AND a.outcome = 'requested' AND a.db_user = session_user) THEN
          RAISE EXCEPTION 'no recovery request of this database user has that id' USING ERRCODE = '22023';
        END IF;
        INSERT INTO pii_vault.audit (action, outcome, request_id, detail)
        VALUES ('recover', 'failed', report_recovery_failure.request_id, report_recovery_failure.failure);
      END $$`,
    sql.unsafe`
      CREATE FUNCTION pii_vault.forget_user(user_id text, reason text, ticket text)
      RETURNS TABLE(erased_rows integer, entries_deleted integer, shared_kept integer)
      LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
      #variable_conflict use_column
      DECLARE
        user_tokens text[];
        unreferenced text[];
      BEGIN
        IF coalesce(btrim(forget_user.reason), '') = '' OR coalesce(btrim(forget_user.ticket), '') = '' THEN
          RAISE EXCEPTION 'an erasure needs a reason and a ticket' USING ERRCODE = '22023';
        END IF;
        -- Loaders write entries in the batch's transaction, after its rows, and wait here: a batch
        -- committed before us has its rows erased below, one after us meets the tombstones.
        LOCK TABLE pii_vault.entries IN SHARE ROW EXCLUSIVE MODE;
        user_tokens := ARRAY(
          SELECT DISTINCT v.m FROM ${userLogins} u, LATERAL (VALUES (u.masked_ip), (u.masked_device_id)) AS v(m)
          WHERE u.user_id = forget_user.user_id AND v.m LIKE 'vlt1:%');
        UPDATE ${userLogins} u SET masked_ip = ${erased}, masked_device_id = ${erased} WHERE u.user_id = forget_user.user_id;
        GET DIAGNOSTICS erased_rows = ROW_COUNT;
        IF erased_rows = 0 THEN
          INSERT INTO pii_vault.audit (action, outcome, reason, ticket, user_id, detail)
          VALUES ('forget', 'failed', forget_user.reason, forget_user.ticket, forget_user.user_id, 'no rows');
          entries_deleted := 0;
          shared_kept := 0;
          RETURN NEXT;
          RETURN;
        END IF;
        -- The user's tokens no other row holds (one scan): their values go, and stay gone.
        unreferenced := ARRAY(
          SELECT t FROM unnest(user_tokens) AS t
          EXCEPT
          SELECT v.m FROM ${userLogins} u, LATERAL (VALUES (u.masked_ip), (u.masked_device_id)) AS v(m)
          WHERE v.m = ANY(user_tokens));
        DELETE FROM pii_vault.entries e WHERE e.token = ANY(unreferenced);
        GET DIAGNOSTICS entries_deleted = ROW_COUNT;
        INSERT INTO pii_vault.tombstones (token) SELECT t FROM unnest(unreferenced) AS t ON CONFLICT DO NOTHING;
        -- A pending recovery's token list would link the user to their tokens: it goes too.
        DELETE FROM pii_vault.requests q WHERE q.tokens && user_tokens;
        shared_kept := cardinality(user_tokens) - cardinality(unreferenced);
        INSERT INTO pii_vault.audit (action, outcome, reason, ticket, user_id, detail)
        VALUES ('forget', 'done', forget_user.reason, forget_user.ticket, forget_user.user_id,
                format('rows=%s entries_deleted=%s shared_kept=%s', erased_rows, entries_deleted, shared_kept));
        RETURN NEXT;
      END $$`,
    sql.unsafe`
      CREATE FUNCTION pii_vault.add_key_version(version integer, wrapped_token_key bytea, reason text) RETURNS void
      LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
      #variable_conflict use_column
      BEGIN
        IF coalesce(btrim(add_key_version.reason), '') = '' THEN
          RAISE EXCEPTION 'a key change needs a reason' USING ERRCODE = '22023';
        END IF;
        -- A retired version keeps its row: a version number is never used twice.
        IF EXISTS (SELECT FROM pii_vault.keyring k WHERE k.key_version = add_key_version.version) THEN
          RAISE EXCEPTION 'the keyring already holds version %', add_key_version.version USING ERRCODE = '23505';
        END IF;
        INSERT INTO pii_vault.keyring (key_version, wrapped_token_key) VALUES (add_key_version.version, add_key_version.wrapped_token_key);
        INSERT INTO pii_vault.audit (action, outcome, reason, detail)
        VALUES ('rotate', 'done', add_key_version.reason, format('added=%s', add_key_version.version));
      END $$`,
    sql.unsafe`
      CREATE FUNCTION pii_vault.retire_key_version(retiring integer, successor integer, reason text, ticket text) RETURNS bigint
      LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
      #variable_conflict use_column
      DECLARE
        new_id bigint;
      BEGIN
        IF coalesce(btrim(retire_key_version.reason), '') = '' THEN
          RAISE EXCEPTION 'a key change needs a reason' USING ERRCODE = '22023';
        END IF;
        IF retire_key_version.successor = retire_key_version.retiring OR NOT EXISTS (
          SELECT FROM pii_vault.keyring k WHERE k.key_version = retire_key_version.successor AND k.retired_at IS NULL) THEN
          RAISE EXCEPTION 'version % is not a current version of the keyring to move to', retire_key_version.successor USING ERRCODE = '22023';
        END IF;
        -- Waits for every batch writing under the version (they hold its row FOR SHARE).
        UPDATE pii_vault.keyring k SET retired_at = coalesce(k.retired_at, now())
        WHERE k.key_version = retire_key_version.retiring AND k.wrapped_token_key IS NOT NULL;
        IF NOT FOUND THEN
          RAISE EXCEPTION 'the keyring holds no version % to retire', retire_key_version.retiring USING ERRCODE = '22023';
        END IF;
        INSERT INTO pii_vault.audit (action, outcome, reason, ticket, detail)
        VALUES ('rotate', 'requested', retire_key_version.reason, nullif(btrim(retire_key_version.ticket), ''),
                format('from=%s to=%s', retire_key_version.retiring, retire_key_version.successor))
        RETURNING id INTO new_id;
        INSERT INTO pii_vault.requests (id, action, db_user, requested_in, expires_at, retiring, successor)
        VALUES (new_id, 'rotate', session_user, pg_current_xact_id(), now() + interval ${sql.literalValue(ROTATION_REQUEST_LIFETIME)},
                retire_key_version.retiring, retire_key_version.successor);
        RETURN new_id;
      END $$`,
    sql.unsafe`
      CREATE FUNCTION pii_vault.rotation_request(request_id bigint) RETURNS pii_vault.requests
      LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
      DECLARE
        request pii_vault.requests;
        refused text;
      BEGIN
        SELECT * INTO request FROM pii_vault.requests q WHERE q.id = rotation_request.request_id;
        refused := pii_vault.refusal(request, 'rotate');
        IF refused IS NOT NULL THEN
          RAISE EXCEPTION 'rotation refused: %', refused USING ERRCODE = '42501';
        END IF;
        RETURN request;
      END $$`,
    sql.unsafe`
      CREATE FUNCTION pii_vault.rotation_entries(request_id bigint, max_rows integer)
      RETURNS TABLE(token text, field text, sealed bytea)
      LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
      #variable_conflict use_column
      DECLARE
        request pii_vault.requests := pii_vault.rotation_request(rotation_entries.request_id);
      BEGIN
        RETURN QUERY SELECT e.token::text, e.field::text, e.sealed FROM pii_vault.entries e
          WHERE e.key_version = request.retiring LIMIT rotation_entries.max_rows FOR UPDATE SKIP LOCKED;
      END $$`,
    sql.unsafe`
      CREATE FUNCTION pii_vault.rotation_store(request_id bigint, tokens text[], sealed bytea[]) RETURNS integer
      LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
      #variable_conflict use_column
      DECLARE
        request pii_vault.requests := pii_vault.rotation_request(rotation_store.request_id);
        live boolean;
        stored integer;
      BEGIN
        SELECT k.retired_at IS NULL INTO live FROM pii_vault.keyring k WHERE k.key_version = request.successor FOR SHARE;
        IF live IS NOT TRUE THEN
          RAISE EXCEPTION 'vault key version % is retired or unknown', request.successor USING ERRCODE = 'VK001';
        END IF;
        UPDATE pii_vault.entries e SET key_version = request.successor, sealed = t.sealed
        FROM unnest(rotation_store.tokens, rotation_store.sealed) AS t(token, sealed)
        WHERE e.token = t.token AND e.key_version = request.retiring;
        GET DIAGNOSTICS stored = ROW_COUNT;
        UPDATE pii_vault.requests q SET reencrypted = q.reencrypted + stored WHERE q.id = request.id;
        RETURN stored;
      END $$`,
    sql.unsafe`
      CREATE FUNCTION pii_vault.finish_rotation(request_id bigint) RETURNS TABLE(reencrypted integer, retired boolean)
      LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
      #variable_conflict use_column
      DECLARE
        request pii_vault.requests := pii_vault.rotation_request(finish_rotation.request_id);
      BEGIN
        reencrypted := request.reencrypted;
        -- Nothing is written under a retired version, so none left now means none ever again.
        retired := NOT EXISTS (SELECT FROM pii_vault.entries e WHERE e.key_version = request.retiring);
        IF retired THEN
          UPDATE pii_vault.keyring k SET wrapped_token_key = NULL WHERE k.key_version = request.retiring;
          DELETE FROM pii_vault.requests q WHERE q.id = request.id;
        END IF;
        INSERT INTO pii_vault.audit (action, outcome, request_id, detail)
        VALUES ('rotate', CASE WHEN retired THEN 'done' ELSE 'failed' END, request.id,
                format('from=%s to=%s reencrypted=%s retired=%s', request.retiring, request.successor, reencrypted, retired::text));
        RETURN NEXT;
      END $$`,
    sql.unsafe`REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pii_vault FROM PUBLIC`,
    sql.unsafe`COMMENT ON SCHEMA pii_vault IS ${sql.literalValue(VAULT_SCHEMA_MARK)}`,
  ];
}

const KeyringRow = Type.Object({
  key_version: Type.Integer(), wrapped_token_key: Type.Union([Type.String(), Type.Null()]), retired: Type.Boolean(),
});
/** Keyring rows, wrapped keys as base64 (Slonik hands bytea over as text most simply so); null once retired. */
export const sqlKeyringRow = sql.type(toStandardSchema(KeyringRow));
/** Every keyring row, as {@link sqlKeyringRow} types it. */
export const SELECT_KEYRING = sqlKeyringRow`
  SELECT key_version, encode(wrapped_token_key, 'base64') AS wrapped_token_key, retired_at IS NOT NULL AS retired
  FROM pii_vault.keyring ORDER BY key_version`;

const VaultState = Type.Object({ present: Type.Boolean(), mark: Type.Union([Type.String(), Type.Null()]), user_logins_schema: Type.String() });
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
    for (const statement of vaultDdl(sql.identifier([state.user_logins_schema, "user_logins"]))) await tx.query(statement);
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
        throw new FatalError("The vault has no token key yet and this role may not create one: run the tool once as the database owner (see docs/vault.md)");
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
      throw new ConfigError(`VAULT_KEY_VERSION=${current.version} was retired by a key rotation: set VAULT_KEY and VAULT_KEY_VERSION to a current version (${live})`);
    }
    if (!row?.wrapped_token_key) {
      throw new ConfigError(
        `VAULT_KEY_VERSION=${current.version} is not in the vault keyring (it holds version ${live}): set VAULT_KEY and VAULT_KEY_VERSION to a version it holds, or add this one with scripts/rotate-vault-key.ts`,
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
export async function writeEntries(tx: DatabaseTransactionConnection, key: VaultKey, values: readonly MaskedValue[]): Promise<void> {
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
export function createRecentSet(limit: number): { has(key: string): boolean; add(key: string): void; readonly size: number } {
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
  const written = createRecentSet(WRITTEN_TOKENS_LIMIT);
  return {
    name: "vault",
    async setup(pool) {
      try {
        await ensureVault(pool);
        tokenKey = createSecretKey(await loadTokenKey(pool, keys));
      } catch (error) {
        if (errorCode(error) !== "42501") throw error;
        throw await createGrantError(pool, describeDatabaseError(error));
      }
      if (!await pool.oneFirst(sql.unsafe`
        SELECT has_function_privilege('pii_vault.write_entries(integer, text[], text[], bytea[])', 'EXECUTE')`)) {
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
          `Vault key version ${keys.current.version} was retired by a key rotation: restart the loader with VAULT_KEY and VAULT_KEY_VERSION of a current version (scripts/rotate-vault-key.ts, docs/vault.md)`,
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
