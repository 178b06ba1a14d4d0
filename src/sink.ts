/**
 * The Postgres sink: the `user_logins` table (a contract: created exactly so when absent,
 * never altered), the tool's own table of processed message ids, and the insert that
 * records a batch's ids and inserts the rows whose ids were new (src/write-batch.ts
 * writes a batch with it).
 *
 * @module
 */
import { Type } from "@sinclair/typebox";
import { type DatabasePool, type DatabaseTransactionConnection, type QuerySqlToken, sql } from "slonik";
import type { MaskStrategy } from "./contract.ts";
import { withDatabaseCallLimits } from "./database.ts";
import { errorCode, FatalError, firstLineScrubbed, redactValues } from "./errors.ts";
import type { MaskedRecord } from "./masking.ts";
import { classifyDatabaseError } from "./postgres-errors.ts";
import { toStandardSchema } from "./typed-sql.ts";

/** The table this tool fills: a contract, created exactly so when absent, never altered. */
export const USER_LOGINS_DDL: QuerySqlToken = sql.unsafe`
  CREATE TABLE IF NOT EXISTS user_logins(
    user_id varchar(128), device_type varchar(32), masked_ip varchar(256),
    masked_device_id varchar(256), locale varchar(32), app_version integer, create_date date)`;
/** Each column of the contract and its type, as Postgres' `format_type` names it. */
export const USER_LOGINS_CONTRACT = {
  user_id: "character varying(128)",
  device_type: "character varying(32)",
  masked_ip: "character varying(256)",
  masked_device_id: "character varying(256)",
  locale: "character varying(32)",
  app_version: "integer",
  create_date: "date",
} as const;
const USER_LOGINS_COLUMNS = Object.keys(USER_LOGINS_CONTRACT) as (keyof typeof USER_LOGINS_CONTRACT)[];

/** The tool's own table: which SQS messages already have their row, so redelivery adds none. */
export const PROCESSED_TABLE = "user_logins_sqs_messages";
/** SQS keeps a message at most 14 days, so an id older than that can never come back. */
const PROCESSED_RETENTION_DAYS = 15;
/**
 * The one way to remove ids from the table: those older than the retention, and nothing
 * else, whoever calls it (SECURITY DEFINER), so a loading role needs no DELETE.
 */
export const PRUNE_FUNCTION = `${PROCESSED_TABLE}_prune`;
const LedgerState = Type.Object({ schema: Type.String(), may_create_prune: Type.Boolean() });
const sqlLedgerState = sql.type(toStandardSchema(LedgerState));

/** Pruning old ids may take minutes on a big table; it is housekeeping, not a batch. */
const PRUNE_TIMEOUT_MS = 5 * 60_000;

/** What one batch's insert reports: how many of its rows were new. */
const InsertedCount = Type.Object({ inserted: Type.Integer({ minimum: 0 }), xid: Type.String() });
const InsertedIds = Type.Object({
  inserted: Type.Integer({ minimum: 0 }),
  xid: Type.String(),
  fresh_ids: Type.Array(Type.String()),
});

const sqlInsertedCount = sql.type(toStandardSchema(InsertedCount));
const sqlInsertedIds = sql.type(toStandardSchema(InsertedIds));

/**
 * Create `user_logins` if absent (never alter it) and the tool's own table, then check the
 * current role may insert. Safe to run from many consumers at once.
 *
 * @throws {FatalError} with a fix when a table or permission is missing
 */
export async function ensureSchema(pool: DatabasePool): Promise<void> {
  await pool.transaction(async (tx) => {
    // Concurrent CREATE TABLE IF NOT EXISTS can still collide in pg_type; serialise starters.
    await tx.query(sql.unsafe`SELECT pg_advisory_xact_lock(hashtext('sqs-login-masker schema'))`);
    const existing = await tx.maybeOneFirst(sql.unsafe`SELECT to_regclass('user_logins')::text`);
    if (existing === null) await tx.query(USER_LOGINS_DDL);
    const columns = await tx.anyFirst(sql.unsafe`
      SELECT attname::text FROM pg_attribute
      WHERE attrelid = 'user_logins'::regclass AND attnum > 0 AND NOT attisdropped`);
    const missing = USER_LOGINS_COLUMNS.filter((column) => !columns.includes(column));
    if (missing.length > 0) {
      throw new FatalError(
        `Table user_logins lacks column(s) ${missing.join(", ")}: it is not the user_logins this tool loads`,
      );
    }
    // Create only what is missing: CREATE ... IF NOT EXISTS still needs CREATE on the
    // schema, which a loading role that was handed existing tables need not have.
    if (await tx.maybeOneFirst(sql.unsafe`SELECT to_regclass(${PROCESSED_TABLE})::text`) === null) {
      await tx.query(sql.unsafe`
        CREATE TABLE ${sql.identifier([PROCESSED_TABLE])}(
          message_id varchar(128) PRIMARY KEY,
          processed_at timestamptz NOT NULL DEFAULT now())`);
      // BRIN: ids arrive in time order, so block ranges serve the retention delete, and
      // unlike a B-tree it costs next to nothing per inserted row.
      await tx.query(sql.unsafe`
        CREATE INDEX ${sql.identifier([PROCESSED_TABLE + "_processed_at"])}
        ON ${sql.identifier([PROCESSED_TABLE])} USING brin (processed_at)`);
    }
    const canInsert = await tx.oneFirst(sql.unsafe`
      SELECT has_table_privilege('user_logins', 'INSERT')
         AND has_table_privilege(${PROCESSED_TABLE}, 'INSERT,SELECT')`);
    if (!canInsert) {
      throw new FatalError(
        describeMissingWriteGrants(await tx.oneFirst(sql.unsafe`SELECT current_user::text`) as string),
      );
    }
    await pruneProcessed(tx);
  });
}

/** A role that may not write the tables: what it lacks, and the grants that fix it. */
export function describeMissingWriteGrants(role: string): string {
  return `Role ${role} may not write user_logins or ${PROCESSED_TABLE}: GRANT INSERT ON user_logins TO ${role}; GRANT INSERT, SELECT ON ${PROCESSED_TABLE} TO ${role}; GRANT EXECUTE ON FUNCTION ${PRUNE_FUNCTION}() TO ${role}`;
}

/** Remove ids past the retention through the prune function, creating it if absent and this role may. */
async function pruneProcessed(tx: DatabaseTransactionConnection): Promise<void> {
  const ledger = await tx.one(sqlLedgerState`
    SELECT n.nspname::text AS schema,
           to_regprocedure(format('%I.%I()', n.nspname, ${PRUNE_FUNCTION}::text)) IS NULL
             AND has_table_privilege(c.oid, 'DELETE') AND has_schema_privilege(n.oid, 'CREATE') AS may_create_prune
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ${PROCESSED_TABLE}::regclass`);
  const prune = sql.identifier([ledger.schema, PRUNE_FUNCTION]);
  if (ledger.may_create_prune) {
    await tx.query(sql.unsafe`
      CREATE FUNCTION ${prune}() RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DELETE FROM ${sql.identifier([ledger.schema, PROCESSED_TABLE])}
        WHERE processed_at < now() - make_interval(days => ${
      sql.literalValue(String(PROCESSED_RETENTION_DAYS))
    }::int) $$`);
    await tx.query(sql.unsafe`REVOKE ALL ON FUNCTION ${prune}() FROM PUBLIC`);
  }
  const mayPrune = await tx.oneFirst(sql.unsafe`
    SELECT coalesce(has_function_privilege(to_regprocedure(format('%I.%I()', ${ledger.schema}::text, ${PRUNE_FUNCTION}::text)), 'EXECUTE'), false)`);
  if (mayPrune) {
    // Housekeeping that may take minutes on a big table: its own limits, not a batch's.
    await tx.query(sql.unsafe`SELECT set_config('statement_timeout', ${String(PRUNE_TIMEOUT_MS)}, true)`);
    await withDatabaseCallLimits(
      { deadlineMs: PRUNE_TIMEOUT_MS + 5_000 },
      () => tx.query(sql.unsafe`SELECT ${prune}()`),
    );
  }
}

/** What `insertRows` did, and what to run once its transaction has committed. */
export interface InsertedRows {
  inserted: number;
  /**
   * The transaction's id (`pg_current_xact_id`): if the answer to its COMMIT is lost,
   * `pg_xact_status` tells whether it committed.
   */
  xid?: string;
  /** The strategy's after-commit callback from `persist`, if it gave one. */
  onCommit?: () => void;
}

/**
 * Insert the rows of messages not processed before, and record their ids, in the given
 * transaction, in one statement: the ids that were new select the rows that go in. Nothing
 * comes back per row (parsing rows one by one is a cost on the hot path). A
 * strategy that persists gets the new ids back as one array, and the values of those
 * messages only.
 *
 * @returns how many rows were inserted (the rest were already loaded)
 */
export async function insertRows(
  tx: DatabaseTransactionConnection,
  strategy: MaskStrategy,
  batch: readonly MaskedRecord[],
): Promise<InsertedRows> {
  if (batch.length === 0) return { inserted: 0 };
  const tuples = batch.map(({ record, row }) => [
    record.messageId,
    row.user_id,
    row.device_type,
    row.masked_ip,
    row.masked_device_id,
    row.locale,
    row.app_version,
    row.create_date,
  ]);
  const columns = sql.join(USER_LOGINS_COLUMNS.map((c) => sql.identifier([c])), sql.fragment`, `);
  const rows = sql.fragment`
    WITH batch AS (
      SELECT * FROM ${sql.unnest(tuples, ["text", "text", "text", "text", "text", "text", "int4", "date"])}
        AS t(message_id, ${columns})
    ), fresh AS (
      INSERT INTO ${sql.identifier([PROCESSED_TABLE])} (message_id)
      SELECT message_id FROM batch
      ON CONFLICT (message_id) DO NOTHING
      RETURNING message_id
    ), inserted AS (
      INSERT INTO user_logins (${columns})
      SELECT ${columns} FROM batch WHERE message_id IN (SELECT message_id FROM fresh)
      RETURNING 1
    )`;
  if (!strategy.persist) {
    return await tx.one(
      sqlInsertedCount`${rows} SELECT count(*)::int AS inserted, pg_current_xact_id()::text AS xid FROM inserted`,
    );
  }
  const { inserted, xid, fresh_ids: freshIds } = await tx.one(sqlInsertedIds`
    ${rows} SELECT (SELECT count(*)::int FROM inserted) AS inserted, pg_current_xact_id()::text AS xid,
      ARRAY(SELECT message_id::text FROM fresh) AS fresh_ids`);
  const fresh = new Set(freshIds);
  const values = batch.filter((m) => fresh.has(m.record.messageId)).flatMap((m) => m.values);
  if (values.length === 0) return { inserted, xid };
  try {
    return { inserted, xid, onCommit: await strategy.persist(tx, values) ?? undefined };
  } catch (error) {
    // Postgres' own errors go to the caller to classify (transient, row, fatal); anything
    // else is the strategy's, and may name the raw values it was handed.
    if (classifyDatabaseError(error) !== "fatal" || errorCode(error) !== undefined) throw error;
    throw new FatalError(
      `Strategy ${strategy.name} failed to persist: ${
        redactValues(firstLineScrubbed(error), values.map((v) => v.value))
      }`,
    );
  }
}
