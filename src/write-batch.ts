/**
 * The write of one batch: one transaction on the fast path; when Postgres refuses the data,
 * whose fault it is decides what happens. The table's (src/table-check.ts) stops the tool
 * with nothing dead-lettered; otherwise each row is written in its own transaction, so that
 * only the rows Postgres refuses are left out, for the DLQ.
 *
 * @module
 */
import { type DatabasePool, sql } from "slonik";
import type { MaskStrategy } from "./contract.ts";
import { describeDatabaseError, redactValues } from "./errors.ts";
import type { MaskedRecord } from "./masking.ts";
import { classifyDatabaseError, TransientDatabaseError } from "./postgres-errors.ts";
import { type InsertedRows, insertRows } from "./sink.ts";
import { isTableFaultCode, probeRefusedAlike, tableFault } from "./table-check.ts";

/** The outcome of writing one batch: what committed, and what Postgres refused and why. */
export interface WriteOutcome {
  inserted: number;
  duplicates: number;
  committed: MaskedRecord[];
  rejected: Array<{ masked: MaskedRecord; reason: string }>;
}

/**
 * A batch's transaction whose COMMIT went out: kept across the retries of one batch, so
 * that when the answer was lost, the retry asks Postgres whether it committed instead of
 * writing again (the processed-id table would keep the rows single, but count them as
 * duplicates, and a strategy's after-commit step would be skipped).
 */
export interface CommitTrail {
  written?: InsertedRows;
}

/** The outcome of a commit not yet known: the connection dropped while Postgres was still at it. */
class CommitOutcomeUnknownError extends TransientDatabaseError {
  override name = "CommitOutcomeUnknownError";
}

/**
 * What became of the batch's last transaction, if its COMMIT went out and no answer came:
 * committed, its rows (and the after-commit step run); aborted, nothing (write again).
 *
 * @throws CommitOutcomeUnknownError (transient) while Postgres still has it in progress
 */
async function settledCommit(pool: DatabasePool, trail: CommitTrail): Promise<InsertedRows | undefined> {
  const written = trail.written;
  if (written?.xid === undefined) return undefined;
  const status = await pool.maybeOneFirst(sql.unsafe`SELECT pg_xact_status(${written.xid}::xid8)::text`);
  if (status === "in progress") throw new CommitOutcomeUnknownError("the outcome of a COMMIT is not known yet");
  trail.written = undefined;
  if (status !== "committed") return undefined;
  written.onCommit?.();
  return written;
}

/**
 * Write a batch in one transaction. If Postgres refuses the data and the refusal is the
 * table's, throw a `TableFault`; otherwise write each row in its own transaction so that
 * only the bad ones are left out; already-committed rows are skipped on any retry by the
 * processed-id table.
 *
 * @param trail kept by the caller across its retries of this batch
 * @throws transient and fatal database errors, for the caller to wait on or stop for;
 *   a `TableFault` (fatal) when the table refuses what any valid row would be
 */
export async function writeBatch(
  pool: DatabasePool,
  strategy: MaskStrategy,
  batch: readonly MaskedRecord[],
  trail: CommitTrail = {},
): Promise<WriteOutcome> {
  const unique = [...new Map(batch.map((m) => [m.record.messageId, m])).values()];
  const whole = (inserted: number): WriteOutcome => ({
    inserted,
    duplicates: batch.length - inserted,
    committed: [...batch],
    rejected: [],
  });
  const settled = await settledCommit(pool, trail);
  if (settled) return whole(settled.inserted);
  try {
    const { inserted, onCommit } = await pool.transaction(async (tx) => {
      const written = await insertRows(tx, strategy, unique);
      trail.written = written;
      return written;
    });
    trail.written = undefined;
    onCommit?.();
    return whole(inserted);
  } catch (error) {
    if (classifyDatabaseError(error) !== "row") throw error;
    // Before any row is blamed: a refusal the table's own probe row gets too is the table's.
    if (isTableFaultCode(error) || await probeRefusedAlike(pool, error)) throw await tableFault(pool, error);
  }
  const outcome: WriteOutcome = { inserted: 0, duplicates: 0, committed: [], rejected: [] };
  const rejectedIds = new Map<string, string>();
  for (const masked of unique) {
    try {
      const { inserted, onCommit } = await pool.transaction((tx) => insertRows(tx, strategy, [masked]));
      onCommit?.();
      outcome.inserted += inserted;
    } catch (error) {
      if (classifyDatabaseError(error) !== "row") throw error;
      if (isTableFaultCode(error)) throw await tableFault(pool, error);
      const { ip, device_id } = masked.record.message;
      rejectedIds.set(masked.record.messageId, redactValues(describeDatabaseError(error), [ip, device_id]));
    }
  }
  for (const masked of batch) {
    const reason = rejectedIds.get(masked.record.messageId);
    if (reason === undefined) outcome.committed.push(masked);
    else outcome.rejected.push({ masked, reason: `rejected by Postgres: ${reason}` });
  }
  outcome.duplicates = outcome.committed.length - outcome.inserted;
  return outcome;
}
