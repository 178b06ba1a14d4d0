/**
 * `check`'s look at Postgres, in one read-only transaction: the login, whether the server
 * takes writes, `user_logins` against the contract (or the right to create it), the grants
 * the tool's writes need, the pruning of its ledger, and the mask recorded with the table
 * (src/mask-record.ts) against this configuration's.
 *
 * @module
 */
import { Type } from "@sinclair/typebox";
import { type DatabaseTransactionConnection, sql } from "slonik";
import type { MaskStrategy } from "../contract.ts";
import { createDatabasePool } from "../database.ts";
import { FatalError, redactUrl } from "../errors.ts";
import { describeMismatch, MASK_TABLE, readMaskRecord } from "../mask-record.ts";
import { describeStartupError } from "../postgres-errors.ts";
import { describeMissingWriteGrants, PROCESSED_TABLE, PRUNE_FUNCTION, USER_LOGINS_CONTRACT } from "../sink.ts";
import { contractDrift, readColumns } from "../table-check.ts";
import { toStandardSchema } from "../typed-sql.ts";
import { errorFinding, type Finding } from "./check-report.ts";

const Facts = Type.Object({
  role: Type.String(),
  schema: Type.Union([Type.String(), Type.Null()]),
  standby: Type.Boolean(),
  has_table: Type.Boolean(),
  may_insert: Type.Boolean(),
  has_ledger: Type.Boolean(),
  may_write_ledger: Type.Boolean(),
  may_create: Type.Boolean(),
  may_prune: Type.Boolean(),
  may_create_prune: Type.Boolean(),
  has_mask_table: Type.Boolean(),
  may_record_mask: Type.Boolean(),
});
type Facts = typeof Facts.static;
const sqlFacts = sql.type(toStandardSchema(Facts));

/**
 * Everything the tool's start-up needs of the database, read in one statement. A ledger
 * without its prune function may get one when this role may create it (the tool does so).
 */
function readFacts(tx: DatabaseTransactionConnection) {
  return tx.one(sqlFacts`
    WITH t AS (
      SELECT to_regclass('user_logins') AS logins, to_regclass(${PROCESSED_TABLE}) AS ledger,
        to_regclass(${MASK_TABLE}) AS mask),
    p AS (
      SELECT to_regprocedure(format('%I.%I()', n.nspname, ${PRUNE_FUNCTION}::text)) AS prune, n.oid AS ledger_schema
      FROM t JOIN pg_class c ON c.oid = t.ledger JOIN pg_namespace n ON n.oid = c.relnamespace)
    SELECT current_user::text AS role, current_schema()::text AS schema, pg_is_in_recovery() AS standby,
      t.logins IS NOT NULL AS has_table,
      coalesce(t.logins IS NOT NULL AND has_table_privilege(t.logins, 'INSERT'), false) AS may_insert,
      t.ledger IS NOT NULL AS has_ledger,
      coalesce(t.ledger IS NOT NULL AND has_table_privilege(t.ledger, 'INSERT,SELECT'), false) AS may_write_ledger,
      coalesce(has_schema_privilege(current_schema(), 'CREATE'), false) AS may_create,
      coalesce(has_function_privilege(p.prune, 'EXECUTE'), false) AS may_prune,
      coalesce(p.prune IS NULL AND has_table_privilege(t.ledger, 'DELETE')
        AND has_schema_privilege(p.ledger_schema, 'CREATE'), false) AS may_create_prune,
      t.mask IS NOT NULL AS has_mask_table,
      coalesce(t.mask IS NOT NULL AND has_table_privilege(t.mask, 'INSERT'), false) AS may_record_mask
    FROM t LEFT JOIN p ON true`);
}

/** What the contract says of `user_logins`, against the table: each column that differs, one line. */
async function contractFindings(tx: DatabaseTransactionConnection): Promise<Finding[]> {
  return contractDrift(await readColumns(tx)).map(({ column, kind, text }) =>
    errorFinding(
      kind === "missing"
        ? `Table ${text}: it is not the user_logins this tool loads`
        : kind === "type"
        ? `Column ${text}: restore it (ALTER TABLE user_logins ALTER COLUMN ${column} TYPE ${
          USER_LOGINS_CONTRACT[column as keyof typeof USER_LOGINS_CONTRACT]
        })`
        : `Column ${text}, so every insert would be refused: give it a default, or drop NOT NULL`,
    )
  );
}

/**
 * The mask recorded beside `user_logins` against this configuration's: the strategy, and
 * the key's fingerprint where the strategy knows it before its `setup` (the vault reads its
 * key from the database there, so its fingerprint is checked at start). Or, with no record
 * yet, whether this role may make it.
 */
async function maskFindings(
  tx: DatabaseTransactionConnection,
  facts: Facts,
  strategy: MaskStrategy,
): Promise<Finding[]> {
  let record;
  try {
    record = await readMaskRecord(tx);
  } catch (error) {
    if (error instanceof FatalError) return [errorFinding(error.message)];
    throw error;
  }
  if (!record) {
    const mayRecord = facts.has_mask_table ? facts.may_record_mask : facts.may_create;
    if (facts.has_table && !mayRecord) {
      return [errorFinding(
        `user_logins has no recorded mask and role ${facts.role} may not record it: run the tool once as the owner of user_logins (it records the mask), or GRANT INSERT ON ${MASK_TABLE} TO ${facts.role}`,
      )];
    }
    const what = strategy.fingerprint === null ? strategy.name : `${strategy.name} and its key's fingerprint`;
    return [{ level: "ok", text: `user_logins has no recorded mask yet: the first run records ${what}` }];
  }
  const later = strategy.fingerprint === undefined && strategy.setup !== undefined;
  const same = record.strategy === strategy.name && (later || record.fingerprint === (strategy.fingerprint ?? null));
  // A different mask is refused at start as a configuration error: the same here.
  if (!same) return [errorFinding(describeMismatch(record, strategy), true)];
  const fingerprint = record.fingerprint ? ` (fingerprint ${record.fingerprint})` : "";
  return [{
    level: "ok",
    text: `${record.table} is masked by ${record.strategy}${fingerprint}, as this configuration${
      later ? "; its key's fingerprint is checked at start, once the strategy has read it" : ""
    }`,
  }];
}

/** The tables, the grants and the mask, read in a read-only transaction. */
async function schemaFindings(
  tx: DatabaseTransactionConnection,
  strategy: MaskStrategy,
  where: string,
): Promise<Finding[]> {
  const facts = await readFacts(tx);
  const schema = facts.schema ?? "(no schema on the search_path)";
  const findings: Finding[] = [];
  if (facts.standby) {
    findings.push(
      errorFinding(`Postgres at ${where} is a standby and takes no writes: point --database-url at the primary`),
    );
  }
  const mayWrite = (facts.has_table ? facts.may_insert : facts.may_create) &&
    (facts.has_ledger ? facts.may_write_ledger : facts.may_create);
  if (!mayWrite) {
    findings.push(errorFinding(
      facts.has_table && facts.has_ledger
        ? describeMissingWriteGrants(facts.role)
        : `Role ${facts.role} may not create ${
          facts.has_table ? PROCESSED_TABLE : "user_logins"
        } in schema ${schema}: GRANT CREATE ON SCHEMA ${schema} TO ${facts.role}, or run the tool once as the tables' owner`,
    ));
  }
  if (facts.has_table) findings.push(...await contractFindings(tx));
  // The grants a role lacks to write include the prune function's: said once.
  if (mayWrite && facts.has_ledger && !facts.may_prune && !facts.may_create_prune) {
    findings.push({
      level: "warning",
      text:
        `Role ${facts.role} may not prune ${PROCESSED_TABLE}: its ids are kept for good and the table only grows; GRANT EXECUTE ON FUNCTION ${PRUNE_FUNCTION}() TO ${facts.role} (the tool creates the function when run once as the table's owner)`,
    });
  }
  findings.push(...await maskFindings(tx, facts, strategy));
  if (!findings.some((f) => f.level === "error")) {
    findings.unshift({
      level: "ok",
      text: `--database-url ${where}: role ${facts.role} ${
        facts.has_table ? "may write user_logins, as the contract has it," : "may create user_logins,"
      } and ${PROCESSED_TABLE}`,
    });
  }
  return findings;
}

/**
 * Log in and look, changing nothing: the transaction is read-only.
 *
 * @returns the findings; a failure to connect is one error finding with its fix
 */
export async function checkDatabase(databaseUrl: string, strategy: MaskStrategy): Promise<Finding[]> {
  let pool;
  try {
    pool = await createDatabasePool(databaseUrl, 1);
    return await pool.transaction(async (tx) => {
      await tx.query(sql.unsafe`SET TRANSACTION READ ONLY`);
      return await schemaFindings(tx, strategy, redactUrl(databaseUrl));
    });
  } catch (error) {
    return [errorFinding(describeStartupError(error, databaseUrl))];
  } finally {
    await pool?.end().catch(() => {});
  }
}
