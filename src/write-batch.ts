/**
 * The write of one batch: one transaction on the fast path; when Postgres refuses the data,
 * whose fault it is decides what happens. The table's (src/table-check.ts) stops the tool
 * with nothing dead-lettered; otherwise each row is written in its own transaction, so that
 * only the rows Postgres refuses are left out, for the DLQ.
 *
 * @module
 */
import type { DatabasePool } from "slonik";
import type { MaskStrategy } from "./contract.ts";
import { describeDatabaseError, redactValues } from "./errors.ts";
import type { MaskedRecord } from "./masking.ts";
import { classifyDatabaseError } from "./postgres-errors.ts";
import { insertRows } from "./sink.ts";
import { isTableFaultCode, probeRefusedAlike, tableFault } from "./table-check.ts";

/** The outcome of writing one batch: what committed, and what Postgres refused and why. */
export interface WriteOutcome {
  inserted: number;
  duplicates: number;
  committed: MaskedRecord[];
  rejected: Array<{ masked: MaskedRecord; reason: string }>;
}

/**
 * Write a batch in one transaction. If Postgres refuses the data and the refusal is the
 * table's, throw a `TableFault`; otherwise write each row in its own transaction so that
 * only the bad ones are left out; already-committed rows are skipped on any retry by the
 * processed-id table.
 *
 * @throws transient and fatal database errors, for the caller to wait on or stop for;
 *   a `TableFault` (fatal) when the table refuses what any valid row would be
 */
export async function writeBatch(
  pool: DatabasePool,
  strategy: MaskStrategy,
  batch: readonly MaskedRecord[],
): Promise<WriteOutcome> {
  const unique = [...new Map(batch.map((m) => [m.record.messageId, m])).values()];
  try {
    const { inserted, onCommit } = await pool.transaction((tx) => insertRows(tx, strategy, unique));
    onCommit?.();
    return { inserted, duplicates: batch.length - inserted, committed: [...batch], rejected: [] };
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
