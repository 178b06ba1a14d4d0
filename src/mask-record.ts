/**
 * One table, one mask: the strategy and key fingerprint that mask `user_logins`, recorded
 * beside it in the tool's own one-row table `user_logins_mask` at the first run, and
 * checked by every run before it loads anything. Rows masked two ways look alike and never
 * join, so a run under another strategy or key is refused with one line that names both
 * masks (never a key). A table loaded before the record existed (0.1.x) is adopted by the
 * first run that finds it. `user_logins` itself is a contract and is never altered.
 *
 * @module
 */
import { Type } from "@sinclair/typebox";
import { type CommonQueryMethods, type DatabasePool, type DatabaseTransactionConnection, sql } from "slonik";
import type { MaskStrategy } from "./contract.ts";
import { ConfigError, errorCode, FatalError } from "./errors.ts";
import type { Logger } from "./log.ts";
import { PROCESSED_TABLE } from "./sink.ts";
import { toStandardSchema } from "./typed-sql.ts";

/** The tool's own table, in the schema of the `user_logins` it describes. */
export const MASK_TABLE = "user_logins_mask";
/** Where the README says what to do when the mask must change. */
const CHANGE_HINT = `README.md, "One table, one mask"`;

/** The recorded mask of a `user_logins` table. */
export interface MaskRecord {
  /** The table it describes, schema-qualified: `public.user_logins`. */
  table: string;
  /** The strategy's name. */
  strategy: string;
  /** Its key fingerprint; null for a strategy with no key or one that gave none. */
  fingerprint: string | null;
  /** When it was recorded, ISO 8601 in UTC. */
  recordedAt: string;
  /** Whether the table already held data then (loaded by 0.1.x, before masks were recorded). */
  adopted: boolean;
}

/** What a run's check found: the record matched, was made now, or was made now for a table that held data. */
export interface MaskCheck {
  outcome: "matched" | "recorded" | "adopted";
  record: MaskRecord;
}

const Place = Type.Object({
  schema: Type.String(),
  role: Type.String(),
  exists: Type.Boolean(),
  may_create: Type.Boolean(),
  may_read: Type.Boolean(),
  may_insert: Type.Boolean(),
});
type Place = typeof Place.static;
const sqlPlace = sql.type(toStandardSchema(Place));
const tableOf = (place: Place) => `${place.schema}.user_logins`;
const regclassOf = (place: Place) => sql.fragment`format('%I.%I', ${place.schema}::text, 'user_logins')::regclass`;
const maskTableOf = (place: Place) => `${place.schema}.${MASK_TABLE}`;

const Row = Type.Object({
  strategy: Type.String(),
  fingerprint: Type.Union([Type.String(), Type.Null()]),
  recorded_at: Type.String(),
  adopted: Type.Boolean(),
});
const sqlRow = sql.type(toStandardSchema(Row));
/** The columns of {@link Row}, the time as ISO 8601 text in UTC. */
const ROW_COLUMNS = sql.fragment`
  strategy, fingerprint, adopted, to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS recorded_at`;

function toRecord(place: Place, { recorded_at: recordedAt, ...row }: typeof Row.static): MaskRecord {
  return { table: tableOf(place), ...row, recordedAt };
}

/** Where `user_logins` is (as the search path finds it), whether its record exists, and what this role may do. */
async function locate(db: CommonQueryMethods): Promise<Place | null> {
  return await db.maybeOne(sqlPlace`
    WITH t AS (
      SELECT c.oid, n.oid AS schema_oid, n.nspname::text AS schema,
             to_regclass(format('%I.%I', n.nspname, ${MASK_TABLE}::text)) AS mask
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass('user_logins'))
    SELECT schema, current_user::text AS role, mask IS NOT NULL AS exists,
           has_schema_privilege(schema_oid, 'CREATE') AS may_create,
           coalesce(has_table_privilege(mask, 'SELECT'), false) AS may_read,
           coalesce(has_table_privilege(mask, 'INSERT'), false) AS may_insert
    FROM t`);
}

/** Lock not available (NOWAIT), or no privilege for that lock: either way, do not wait. */
const CANNOT_LOCK_NOW = new Set(["55P03", "42501"]);

/**
 * Whether `user_logins` holds rows: its size (no page, no row; a loading role may not
 * SELECT it), or `undefined` when another session holds a lock that would make us wait
 * (a migration, `LOCK TABLE`): the check never stalls a start. ROW EXCLUSIVE is the lock an
 * insert takes, which a loading role may take.
 */
async function holdsRows(tx: DatabaseTransactionConnection, place: Place): Promise<boolean | undefined> {
  try {
    return await tx.transaction(async (savepoint) => {
      await savepoint.query(sql.unsafe`
        LOCK TABLE ${sql.identifier([place.schema, "user_logins"])} IN ROW EXCLUSIVE MODE NOWAIT`);
      // A partitioned table's rows are in its partitions; a plain table has no tree.
      return await savepoint.oneFirst(sql.unsafe`
        SELECT pg_relation_size(t) + coalesce((SELECT sum(pg_relation_size(relid)) FROM pg_partition_tree(t)), 0) > 0
        FROM (SELECT ${regclassOf(place)} AS t) AS target`) as boolean;
    });
  } catch (error) {
    if (CANNOT_LOCK_NOW.has(errorCode(error) ?? "")) return undefined;
    throw error;
  }
}

/** {@link holdsRows}, or when it cannot tell, the catalog's estimate and the message-id table's ids. */
async function mayHoldRows(tx: DatabaseTransactionConnection, place: Place): Promise<boolean> {
  return await holdsRows(tx, place) ?? await tx.oneFirst(sql.unsafe`
    SELECT c.relpages > 0 OR c.reltuples > 0 OR EXISTS (SELECT FROM ${sql.identifier([PROCESSED_TABLE])})
    FROM pg_class c WHERE c.oid = ${regclassOf(place)}`) as boolean;
}

async function readRow(db: CommonQueryMethods, place: Place): Promise<MaskRecord | undefined> {
  if (!place.may_read) {
    throw new FatalError(
      `Role ${place.role} may not read ${maskTableOf(place)}, the mask of ${tableOf(place)}: GRANT SELECT ON ${
        maskTableOf(place)
      } TO ${place.role}`,
    );
  }
  const row = await db.maybeOne(sqlRow`SELECT ${ROW_COLUMNS} FROM ${sql.identifier([place.schema, MASK_TABLE])}`);
  return row ? toRecord(place, row) : undefined;
}

/**
 * The recorded mask of `user_logins` (the one the search path finds), for commands that
 * report or rely on it. Creates nothing.
 *
 * @returns the record, or `undefined` when the table or its record does not exist
 * @throws {FatalError} with the GRANT to run when this role may not read the record
 */
export async function readMaskRecord(db: CommonQueryMethods): Promise<MaskRecord | undefined> {
  const place = await locate(db);
  if (!place?.exists) return undefined;
  return await readRow(db, place);
}

/** A mask as the refusal names it: the strategy, and its fingerprint or why it has none. */
function describeMask(strategy: string, fingerprint: string | null | undefined): string {
  if (fingerprint === undefined) return `${strategy} (no fingerprint)`;
  if (fingerprint === null) return `${strategy} (no key)`;
  return `${strategy} (fingerprint ${fingerprint})`;
}

/** The table's mask against this run's, as the refusal (and `check`) says it. */
export function describeMismatch(record: MaskRecord, strategy: MaskStrategy): string {
  const table = record.fingerprint === null ? record.strategy : describeMask(record.strategy, record.fingerprint);
  return `${record.table} is masked by ${table}; this run's mask is ${
    describeMask(strategy.name, strategy.fingerprint)
  }: rows masked two ways never join. Run with the strategy and key(s) the table was loaded with, or give this mask its own table (${CHANGE_HINT})`;
}

/** The refusal, naming both masks; for a table sure to hold no rows, how to start it over instead. */
async function mismatch(
  tx: DatabaseTransactionConnection,
  record: MaskRecord,
  strategy: MaskStrategy,
  place: Place,
): Promise<ConfigError> {
  const empty = await holdsRows(tx, place) === false
    ? `; ${record.table} holds no rows: to mask it this way instead, have its owner DELETE FROM ${
      maskTableOf(place)
    } first`
    : "";
  return new ConfigError(`${describeMismatch(record, strategy)}${empty}`);
}

const matches = (record: MaskRecord, strategy: MaskStrategy) =>
  record.strategy === strategy.name && record.fingerprint === (strategy.fingerprint ?? null);

/**
 * Refuse a strategy other than the recorded one before it sets up anything of its own
 * (the vault's tables, a user's): its fingerprint may be known only after `setup`, its
 * name is known now. {@link ensureMaskRecord} then checks the whole mask.
 *
 * @throws {ConfigError} when the table is masked by another strategy
 */
export async function refuseAnotherStrategy(pool: DatabasePool, strategy: MaskStrategy): Promise<void> {
  await pool.transaction(async (tx) => {
    const place = await locate(tx);
    if (!place?.exists) return;
    const record = await readRow(tx, place);
    if (record && record.strategy !== strategy.name) throw await mismatch(tx, record, strategy, place);
  });
}

/**
 * Check this run's mask against the one recorded beside `user_logins`, or record it if
 * there is none (creating the record's table when absent and this role may). Run once at
 * start, after `ensureSchema` and the strategy's `setup`, before anything loads; many
 * starters at once take turns.
 *
 * @returns what was found: `matched`, `recorded` (a new table) or `adopted` (one that held data)
 * @throws {ConfigError} naming both masks when they differ
 * @throws {FatalError} with the fix when this role may not read, make or write the record
 */
export async function ensureMaskRecord(pool: DatabasePool, strategy: MaskStrategy): Promise<MaskCheck> {
  const fingerprint = strategy.fingerprint;
  if (fingerprint !== undefined && fingerprint !== null && (typeof fingerprint !== "string" || fingerprint === "")) {
    throw new ConfigError(
      `Strategy ${strategy.name}: fingerprint must be text (keyFingerprint(key)), null or left out`,
    );
  }
  return await pool.transaction(async (tx) => {
    await tx.query(sql.unsafe`SELECT pg_advisory_xact_lock(hashtext('sqs-login-masker mask'))`);
    const located = await locate(tx);
    if (!located) throw new FatalError("Table user_logins does not exist: run ensureSchema(pool) first");
    const place = located.exists ? located : await createMaskTable(tx, located);
    const record = await readRow(tx, place);
    if (record) {
      if (!matches(record, strategy)) throw await mismatch(tx, record, strategy, place);
      return { outcome: "matched", record };
    }
    if (!place.may_insert) {
      throw new FatalError(
        `${
          tableOf(place)
        } has no recorded mask and role ${place.role} may not record it: run the tool once as the owner of user_logins, or GRANT INSERT ON ${
          maskTableOf(place)
        } TO ${place.role}`,
      );
    }
    const adopted = await mayHoldRows(tx, place);
    const made = await tx.one(sqlRow`
      INSERT INTO ${sql.identifier([place.schema, MASK_TABLE])} (strategy, fingerprint, adopted)
      VALUES (${strategy.name}, ${fingerprint ?? null}, ${adopted})
      RETURNING ${ROW_COLUMNS}`);
    return { outcome: adopted ? "adopted" : "recorded", record: toRecord(place, made) };
  });
}

/** Create the record's table beside user_logins, or say what the owner must do; returns the place with it. */
async function createMaskTable(db: CommonQueryMethods, place: Place): Promise<Place> {
  if (!place.may_create) {
    throw new FatalError(
      `Table ${maskTableOf(place)}, which records the mask of ${
        tableOf(place)
      }, does not exist and role ${place.role} may not create it: run the tool once as the owner of user_logins, then GRANT SELECT ON ${
        maskTableOf(place)
      } TO ${place.role}`,
    );
  }
  const table = sql.identifier([place.schema, MASK_TABLE]);
  await db.query(sql.unsafe`
    CREATE TABLE ${table}(
      -- One row: a table has one mask.
      one_mask boolean PRIMARY KEY DEFAULT true CHECK (one_mask),
      strategy text NOT NULL,
      fingerprint text,
      recorded_at timestamptz NOT NULL DEFAULT now(),
      -- user_logins held data when the record was made: loaded before masks were recorded.
      adopted boolean NOT NULL)`);
  await db.query(sql.unsafe`
    COMMENT ON TABLE ${table} IS 'The mask of user_logins (sqs-login-masker): a run with another strategy or key is refused'`);
  return { ...place, exists: true, may_read: true, may_insert: true };
}

/**
 * Say what the check did: one warning for a table adopted from before masks were
 * recorded, one line for a new record, and one warning each start for a strategy that
 * gives no fingerprint.
 */
export function reportMaskCheck(check: MaskCheck, strategy: MaskStrategy, logger: Logger): void {
  const { record } = check;
  const fields = { table: record.table, strategy: record.strategy, fingerprint: record.fingerprint ?? undefined };
  if (check.outcome === "adopted") {
    logger.warn(
      `${record.table} was loaded before its mask was recorded (by 0.1.x): adopted with this run's mask; rows loaded before under another strategy or key cannot be told apart`,
      fields,
    );
  } else if (check.outcome === "recorded") logger.info(`recorded the mask of ${record.table}`, fields);
  if (strategy.fingerprint === undefined) {
    logger.warn(
      `strategy ${strategy.name} gives no fingerprint: a change of its key cannot be detected; give it one (MaskStrategy.fingerprint, keyFingerprint)`,
    );
  }
}
