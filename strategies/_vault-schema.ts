/**
 * The vault in Postgres: its tables, and the functions through which every role but the
 * vault's owner works. The SQL lives here, apart from the strategy, so that it reads as
 * one schema.
 *
 * @module
 */
import { type IdentifierSqlToken, type QuerySqlToken, sql } from "slonik";
import { ERASED_MARKER } from "./_vault-crypto.ts";

/**
 * What marks a vault made by this version: the schema's comment. A vault without it was
 * made by an earlier version, whose grants let roles read and write the tables directly.
 */
export const VAULT_SCHEMA_MARK = "sqs-login-masker vault 3";
/** The mark of the single-key vault (`VAULT_KEY`) this version replaced. */
export const SINGLE_KEY_VAULT_MARK = "sqs-login-masker vault 2";
/** The SQLSTATE `pii_vault.write_entries` raises for a retired (or unknown) key version. */
export const RETIRED_KEY_SQLSTATE = "VK001";
/** How long a committed recovery request may be served, and its token list kept. */
const RECOVERY_REQUEST_LIFETIME = "10 minutes";
/** How long a rotation may go on under one committed request. */
const ROTATION_REQUEST_LIFETIME = "1 day";
/** The most tokens one recovery request may name. */
export const MAX_RECOVERY_TOKENS = 10_000;
/** A recovery's client-side failures the recovery role may report into the audit. */
export const RECOVERY_FAILURES = ["does_not_authenticate", "key_version_not_configured"] as const;
export type RecoveryFailure = (typeof RECOVERY_FAILURES)[number];

/** The schema and its tables: the keyring, the entries, the tombstones of erased tokens, the append-only audit and the pending requests. */
function vaultTables(): QuerySqlToken[] {
  return [
    sql.unsafe`CREATE SCHEMA pii_vault`,
    sql.unsafe`REVOKE ALL ON SCHEMA pii_vault FROM PUBLIC`,
    sql.unsafe`
      CREATE TABLE pii_vault.keyring(
        key_version integer PRIMARY KEY CHECK (key_version > 0),
        -- The recovery key pair's public half (X25519): it seals, it opens nothing.
        public_key bytea NOT NULL UNIQUE CHECK (octet_length(public_key) = 32),
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        -- Set when a rotation starts: from then on nothing is written under this version.
        retired_at timestamptz,
        -- Set when a rotation has moved every entry off it: none will be under it again.
        emptied_at timestamptz,
        CHECK (emptied_at IS NULL OR retired_at IS NOT NULL))`,
    sql.unsafe`
      CREATE TABLE pii_vault.entries(
        token varchar(256) PRIMARY KEY,
        field varchar(32) NOT NULL,
        key_version integer NOT NULL,
        sealed bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp())`,
    // Entries a recovery reported do not open (garbage the admin's rotation stored, say),
    // moved out of the way so the value's next load writes it afresh; kept for the owner.
    sql.unsafe`
      CREATE TABLE pii_vault.quarantine(
        token varchar(256) NOT NULL,
        field varchar(32) NOT NULL,
        key_version integer NOT NULL,
        sealed bytea NOT NULL,
        request_id bigint NOT NULL,
        quarantined_at timestamptz NOT NULL DEFAULT clock_timestamp())`,
    // Tokens erased for good: never written again. No time, no user: they link to no one.
    sql.unsafe`CREATE TABLE pii_vault.tombstones(token varchar(256) PRIMARY KEY)`,
    sql.unsafe`
      CREATE TABLE pii_vault.audit(
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at timestamptz NOT NULL DEFAULT clock_timestamp(),
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
        detail text,
        -- Who says so: the database (what its functions did), or the client (what a caller
        -- reports of its own work, e.g. a value that did not decrypt). A client's report
        -- never undoes a serving: the committed request is the record that values may have left.
        source text NOT NULL DEFAULT 'database' CHECK (source IN ('database', 'client')))`,
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
  ];
}

/** What the loading role calls: a write of entries that answers nothing, refused under a retired key version. */
function loaderFunctions(): QuerySqlToken[] {
  return [
    sql.unsafe`
      CREATE FUNCTION pii_vault.write_entries(version integer, tokens text[], fields text[], sealed bytea[])
      RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
      #variable_conflict use_column
      DECLARE
        live boolean;
      BEGIN
        -- Arguments first, before any table is read: a bad one errs alike whatever the vault
        -- holds (a NULL field once erred only for a token not erased).
        IF cardinality(write_entries.tokens) IS DISTINCT FROM cardinality(write_entries.fields)
           OR cardinality(write_entries.tokens) IS DISTINCT FROM cardinality(write_entries.sealed)
           OR array_position(write_entries.tokens, NULL) IS NOT NULL
           OR array_position(write_entries.fields, NULL) IS NOT NULL
           OR array_position(write_entries.sealed, NULL) IS NOT NULL
           OR EXISTS (SELECT FROM unnest(write_entries.tokens, write_entries.fields) AS a(token, field)
                      WHERE a.token !~ '^vlt1:[A-Za-z0-9_-]{43}$' OR a.field NOT IN ('ip', 'device_id')) THEN
          RAISE EXCEPTION 'write_entries takes equal arrays of tokens, fields (ip, device_id) and ciphertexts, none NULL' USING ERRCODE = '22023';
        END IF;
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
  ];
}

/** Recovery, step one: a request, committed with its audit row by a transaction of its own. */
function recoveryRequestFunctions(): QuerySqlToken[] {
  return [
    // Why a request may not be served now, or NULL. A request row this transaction can see
    // was committed by another one, or inserted by this very transaction (a savepoint's
    // included): requested_in is the top-level id, "in progress" exactly in that case.
    sql.unsafe`
      CREATE FUNCTION pii_vault.refusal(request pii_vault.requests, wanted text) RETURNS text
      LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
        SELECT CASE
          WHEN request.id IS NULL THEN 'no such request (unknown, or expired)'
          WHEN request.action <> wanted THEN 'the request is not for ' || wanted
          WHEN request.db_user <> session_user THEN 'the request was made by another database user'
          WHEN request.expires_at < clock_timestamp() THEN 'the request has expired'
          WHEN pg_xact_status(request.requested_in) IS NOT DISTINCT FROM 'in progress'
            THEN 'the request is not committed: commit it in a transaction of its own first'
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
          RAISE EXCEPTION 'a recovery names 1 to % tokens', ${
      sql.literalValue(String(MAX_RECOVERY_TOKENS))
    } USING ERRCODE = '22023';
        END IF;
        -- A request's tokens are kept no longer than it may be served.
        DELETE FROM pii_vault.requests q WHERE q.expires_at < clock_timestamp();
        INSERT INTO pii_vault.audit (action, outcome, reason, ticket, detail)
        VALUES ('recover', 'requested', request_recovery.reason, request_recovery.ticket, format('tokens=%s', cardinality(wanted)))
        RETURNING id INTO new_id;
        INSERT INTO pii_vault.requests (id, action, db_user, requested_in, expires_at, tokens)
        VALUES (new_id, 'recover', session_user, pg_current_xact_id(), clock_timestamp() + interval ${
      sql.literalValue(RECOVERY_REQUEST_LIFETIME)
    }, wanted);
        RETURN new_id;
      END $$`,
  ];
}

/** Recovery, step two: the ciphertexts of a committed request only, and its failures audited. */
function recoveryServeFunctions(): QuerySqlToken[] {
  const failures = sql.join(RECOVERY_FAILURES.map((f) => sql.literalValue(f)), sql.fragment`, `);
  return [
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
        -- FOR SHARE, the request and then its entries: a row lock reads the latest committed
        -- row, so an erasure committed after this transaction's snapshot (REPEATABLE READ)
        -- fails it with 40001 instead of serving what was erased; one under way is waited for.
        SELECT * INTO request FROM pii_vault.requests q WHERE q.id = serve_recovery.request_id FOR SHARE;
        refused := pii_vault.refusal(request, 'recover');
        IF refused IS NOT NULL THEN
          INSERT INTO pii_vault.audit (action, outcome, request_id, detail)
          VALUES ('recover', 'denied', serve_recovery.request_id, refused);
          RETURN QUERY SELECT 'denied'::text, refused, NULL::text, NULL::text, NULL::integer, NULL::bytea;
          RETURN;
        END IF;
        PERFORM FROM pii_vault.entries e WHERE e.token = ANY(request.tokens) FOR SHARE;
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
    // A client's report: audited as such. An entry that does not open is set aside (to
    // quarantine), so the true value can take its token again; a false report only moves a
    // good entry where its owner can restore it.
    sql.unsafe`
      CREATE FUNCTION pii_vault.report_recovery_failure(request_id bigint, failure text, token text) RETURNS void
      LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
      #variable_conflict use_column
      DECLARE
        request pii_vault.requests;
      BEGIN
        IF report_recovery_failure.failure IS NULL OR report_recovery_failure.failure NOT IN (${failures}) THEN
          RAISE EXCEPTION 'not a recovery failure this function records' USING ERRCODE = '22023';
        END IF;
        IF NOT EXISTS (SELECT FROM pii_vault.audit a WHERE a.id = report_recovery_failure.request_id
                       AND a.action = 'recover' AND a.outcome = 'requested' AND a.db_user = session_user) THEN
          RAISE EXCEPTION 'no recovery request of this database user has that id' USING ERRCODE = '22023';
        END IF;
        SELECT * INTO request FROM pii_vault.requests q WHERE q.id = report_recovery_failure.request_id;
        IF report_recovery_failure.failure = 'does_not_authenticate'
           AND report_recovery_failure.token = ANY(request.tokens) AND pii_vault.refusal(request, 'recover') IS NULL THEN
          WITH moved AS (DELETE FROM pii_vault.entries e WHERE e.token = report_recovery_failure.token RETURNING e.*)
          INSERT INTO pii_vault.quarantine (token, field, key_version, sealed, request_id)
          SELECT m.token, m.field, m.key_version, m.sealed, request.id FROM moved m;
        END IF;
        INSERT INTO pii_vault.audit (action, outcome, request_id, detail, source)
        VALUES ('recover', 'failed', report_recovery_failure.request_id, report_recovery_failure.failure, 'client');
      END $$`,
  ];
}

/**
 * Erasure: the user's rows marked, every value they held deleted and tombstoned, pending
 * requests naming them dropped. A value other users' rows hold too goes as well: those rows
 * may be decoys the loader wrote, and a kept value would be recoverable under the erased
 * user's token. How many there were is reported, so the operator can tell those users.
 */
function erasureFunctions(userLogins: IdentifierSqlToken): QuerySqlToken[] {
  const erased = sql.literalValue(ERASED_MARKER);
  return [
    sql.unsafe`
      CREATE FUNCTION pii_vault.forget_user(user_id text, reason text, ticket text)
      RETURNS TABLE(erased_rows integer, entries_deleted integer, also_in_other_users_rows integer)
      LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
      #variable_conflict use_column
      DECLARE
        user_tokens text[];
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
          also_in_other_users_rows := 0;
          RETURN NEXT;
          RETURN;
        END IF;
        also_in_other_users_rows := (
          SELECT count(DISTINCT v.m)::int FROM ${userLogins} u, LATERAL (VALUES (u.masked_ip), (u.masked_device_id)) AS v(m)
          WHERE u.user_id <> forget_user.user_id AND v.m = ANY(user_tokens));
        DELETE FROM pii_vault.entries e WHERE e.token = ANY(user_tokens);
        GET DIAGNOSTICS entries_deleted = ROW_COUNT;
        DELETE FROM pii_vault.quarantine q WHERE q.token = ANY(user_tokens);
        INSERT INTO pii_vault.tombstones (token) SELECT t FROM unnest(user_tokens) AS t ON CONFLICT DO NOTHING;
        -- A pending recovery's token list would link the user to their tokens: it goes too.
        DELETE FROM pii_vault.requests q WHERE q.tokens && user_tokens;
        INSERT INTO pii_vault.audit (action, outcome, reason, ticket, user_id, detail)
        VALUES ('forget', 'done', forget_user.reason, forget_user.ticket, forget_user.user_id,
                format('rows=%s entries_deleted=%s also_in_other_users_rows=%s', erased_rows, entries_deleted, also_in_other_users_rows));
        RETURN NEXT;
      END $$`,
  ];
}

/** Key versions: adding one, and retiring one (first refusing writes under it, then opening a rotation request). */
function keyringFunctions(): QuerySqlToken[] {
  return [
    sql.unsafe`
      CREATE FUNCTION pii_vault.add_key_version(public_key bytea, reason text) RETURNS integer
      LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
      #variable_conflict use_column
      DECLARE
        found pii_vault.keyring;
        new_version integer;
      BEGIN
        IF coalesce(btrim(add_key_version.reason), '') = '' THEN
          RAISE EXCEPTION 'a key change needs a reason' USING ERRCODE = '22023';
        END IF;
        LOCK TABLE pii_vault.keyring IN SHARE ROW EXCLUSIVE MODE;
        SELECT * INTO found FROM pii_vault.keyring k WHERE k.public_key = add_key_version.public_key;
        -- A retired key is never used again: its version number is not reused either.
        IF found.retired_at IS NOT NULL THEN
          RAISE EXCEPTION 'that public key is version %, retired: make a new key pair', found.key_version USING ERRCODE = '22023';
        END IF;
        IF found.key_version IS NOT NULL THEN
          RETURN found.key_version;
        END IF;
        INSERT INTO pii_vault.keyring (key_version, public_key)
        SELECT coalesce(max(k.key_version), 0) + 1, add_key_version.public_key FROM pii_vault.keyring k
        RETURNING key_version INTO new_version;
        INSERT INTO pii_vault.audit (action, outcome, reason, detail)
        VALUES ('rotate', 'done', add_key_version.reason, format('added=%s', new_version));
        RETURN new_version;
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
        UPDATE pii_vault.keyring k SET retired_at = coalesce(k.retired_at, clock_timestamp())
        WHERE k.key_version = retire_key_version.retiring AND k.emptied_at IS NULL;
        IF NOT FOUND THEN
          RAISE EXCEPTION 'the keyring holds no version % to retire', retire_key_version.retiring USING ERRCODE = '22023';
        END IF;
        INSERT INTO pii_vault.audit (action, outcome, reason, ticket, detail)
        VALUES ('rotate', 'requested', retire_key_version.reason, nullif(btrim(retire_key_version.ticket), ''),
                format('from=%s to=%s', retire_key_version.retiring, retire_key_version.successor))
        RETURNING id INTO new_id;
        INSERT INTO pii_vault.requests (id, action, db_user, requested_in, expires_at, retiring, successor)
        VALUES (new_id, 'rotate', session_user, pg_current_xact_id(), clock_timestamp() + interval ${
      sql.literalValue(ROTATION_REQUEST_LIFETIME)
    },
                retire_key_version.retiring, retire_key_version.successor);
        RETURN new_id;
      END $$`,
  ];
}

/** A rotation's work, under its committed request: the entries to re-encrypt, storing them, and finishing. */
function rotationFunctions(): QuerySqlToken[] {
  return [
    sql.unsafe`
      CREATE FUNCTION pii_vault.rotation_request(request_id bigint) RETURNS pii_vault.requests
      LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
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
          UPDATE pii_vault.keyring k SET emptied_at = clock_timestamp() WHERE k.key_version = request.retiring;
          DELETE FROM pii_vault.requests q WHERE q.id = request.id;
        END IF;
        INSERT INTO pii_vault.audit (action, outcome, request_id, detail)
        VALUES ('rotate', CASE WHEN retired THEN 'done' ELSE 'failed' END, request.id,
                format('from=%s to=%s reencrypted=%s retired=%s', request.retiring, request.successor, reencrypted, retired::text));
        RETURN NEXT;
      END $$`,
  ];
}

/**
 * The vault: tables only its owner reads, and the narrow functions every other role goes
 * through (scripts/vault-roles.sql grants each role its own). The functions are SECURITY
 * DEFINER with a fixed search_path and schema-qualified names, so a caller's objects never
 * stand in for ours. Who and when come from the database (`session_user`, and the wall clock, `clock_timestamp()`: `now()` is a transaction's start, and a transaction may stay open past a deadline).
 *
 * @param userLogins `user_logins`, schema-qualified, for erasure
 */
export function vaultDdl(userLogins: IdentifierSqlToken): QuerySqlToken[] {
  return [
    ...vaultTables(),
    ...loaderFunctions(),
    ...recoveryRequestFunctions(),
    ...recoveryServeFunctions(),
    ...erasureFunctions(userLogins),
    ...keyringFunctions(),
    ...rotationFunctions(),
    sql.unsafe`REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pii_vault FROM PUBLIC`,
    sql.unsafe`COMMENT ON SCHEMA pii_vault IS ${sql.literalValue(VAULT_SCHEMA_MARK)}`,
  ];
}
