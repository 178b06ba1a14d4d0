/**
 * Whose fault a refusal is: the row's (it goes to the DLQ) or the table's (the tool stops
 * and dead-letters nothing). The table is a contract (src/sink.ts): a refusal of a value
 * the validator already checked against it, or of a row the tool's own probe row shares,
 * says the table drifted, and every row after would be refused alike. Also read by `check`.
 *
 * @module
 */
import { Type } from "@sinclair/typebox";
import { type CommonQueryMethods, type DatabasePool, sql } from "slonik";
import { type CodedError, describeDatabaseError, errorChain, FatalError } from "./errors.ts";
import { USER_LOGINS_CONTRACT } from "./sink.ts";
import { toStandardSchema } from "./typed-sql.ts";

/**
 * Refusals no valid row can earn: NOT NULL (the contract makes every written column
 * non-null-valid, and an unwritten one NOT NULL without a default refuses every insert),
 * and a length, range or format refused of a value the validator checked against the
 * contract's types.
 */
const TABLE_FAULT_CODES = new Set(["23502", "22001", "22003", "22P02", "22007", "22008"]);

/** A column of `user_logins` as Postgres has it; `required` is NOT NULL with nothing to fill it. */
export const TableColumn = Type.Object({ name: Type.String(), type: Type.String(), required: Type.Boolean() });
export type TableColumn = typeof TableColumn.static;
const sqlTableColumn = sql.type(toStandardSchema(TableColumn));

/** How `user_logins` differs from the contract, one column each. */
export interface Drift {
  column: string;
  /** `missing`, `type` (it holds another type) or `not-null` (NOT NULL, and no value the tool writes fills it). */
  kind: "missing" | "type" | "not-null";
  /** What it is now, and what the contract says: identifiers and types, never a value. */
  text: string;
}

/** A refusal that is the table's: the tool stops, and dead-letters no valid message. */
export class TableFault extends FatalError {
  override name = "TableFault";
}

export async function readColumns(db: CommonQueryMethods): Promise<readonly TableColumn[]> {
  return await db.any(sqlTableColumn`
    SELECT attname::text AS name, format_type(atttypid, atttypmod) AS type,
      attnotnull AND NOT atthasdef AND attidentity = '' AND attgenerated = '' AS required
    FROM pg_attribute WHERE attrelid = 'user_logins'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`);
}

/** Each column where `user_logins` is not the contract's table. */
export function contractDrift(columns: readonly TableColumn[]): Drift[] {
  const byName = new Map(columns.map((c) => [c.name, c]));
  const drift: Drift[] = [];
  for (const [name, type] of Object.entries(USER_LOGINS_CONTRACT)) {
    const column = byName.get(name);
    if (!column) drift.push({ column: name, kind: "missing", text: `user_logins lacks column ${name} (${type})` });
    else if (column.type !== type) {
      drift.push({
        column: name,
        kind: "type",
        text: `user_logins.${name} is ${column.type}, and the contract says ${type}`,
      });
    }
  }
  for (const column of columns) {
    if (!(column.name in USER_LOGINS_CONTRACT) && column.required) {
      drift.push({
        column: column.name,
        kind: "not-null",
        text: `user_logins.${column.name} is NOT NULL without a default`,
      });
    }
  }
  return drift;
}

type PgError = CodedError & { code: string; table?: string; column?: string; constraint?: string };

function pgError(error: unknown): PgError | undefined {
  return errorChain(error).find((e) => typeof e.code === "string") as PgError | undefined;
}

/** Whether a refusal is one no valid row can earn (see TABLE_FAULT_CODES). */
export function isTableFaultCode(error: unknown): boolean {
  return TABLE_FAULT_CODES.has(pgError(error)?.code ?? "");
}

/** Whether two refusals are the same: code, table, column and constraint. */
export function refusedAlike(a: unknown, b: unknown): boolean {
  const x = pgError(a);
  const y = pgError(b);
  return x !== undefined && y !== undefined && x.code === y.code && x.table === y.table &&
    x.column === y.column && x.constraint === y.constraint;
}

/**
 * The table fault behind a refusal, as one line naming the table, the column and the
 * constraint (identifiers are not PII; the values stay out, as `describeDatabaseError` has them).
 */
export async function tableFault(db: CommonQueryMethods, error: unknown): Promise<TableFault> {
  const e = pgError(error);
  const table = e?.table ?? "user_logins";
  let what: string;
  if (e?.code === "23502" && e.column) {
    what = `${table}.${e.column} refuses every row: not-null (NOT NULL, and the tool writes no value there)`;
  } else {
    // Postgres names no column for a length or type refusal: the drift from the contract does.
    const drift = await readColumns(db).then(contractDrift, () => []);
    const shown = drift.filter((d) => d.kind !== "missing" || e?.code !== "23502");
    what = shown.length > 0
      ? shown.map((d) => `${d.text} (${d.kind})`).join("; ")
      : `${table} refuses every row${e?.column ? ` at column ${e.column}` : ""}${
        e?.constraint ? `: constraint ${e.constraint}` : ""
      }`;
  }
  return new TableFault(
    `Table fault, no message dead-lettered: ${what}; fix the table and restart, and every message loads (${
      describeDatabaseError(error)
    })`,
  );
}

/** A row within the contract that no rule about data should refuse: the table's own test. */
const PROBE = sql.unsafe`
  INSERT INTO user_logins (user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date)
  VALUES ('table-check-probe', 'probe', 'probe', 'probe', 'US', 10000, current_date)`;

/** Thrown to roll the probe back. */
const ROLLBACK = new Error("probe rolled back");

/**
 * Whether the table refuses the tool's probe row as it refused a batch: then the refusal
 * is the table's, not any row's. The probe is rolled back.
 */
export async function probeRefusedAlike(db: DatabasePool, refusal: unknown): Promise<boolean> {
  try {
    await db.transaction(async (tx) => {
      await tx.query(PROBE);
      throw ROLLBACK;
    });
  } catch (error) {
    if (error !== ROLLBACK) return refusedAlike(error, refusal);
  }
  return false;
}
