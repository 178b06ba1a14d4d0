/**
 * Writing: received messages are decoded, the valid ones batched (a batch is full at
 * `batchSize`, or sent after a short linger) and written in one transaction each, at most
 * two at a time; invalid ones go to the DLQ. A batch waits out transient database faults
 * until its deadline, then is released for any consumer; while Postgres takes no writes,
 * receiving pauses.
 *
 * @module
 */
import type { Message } from "@aws-sdk/client-sqs";
import { sql } from "slonik";
import { withDatabaseCallLimits } from "../database.ts";
import { describeDatabaseError } from "../errors.ts";
import { maskRecord, type MaskedRecord } from "../masking.ts";
import { classifyDatabaseError } from "../postgres-errors.ts";
import { decodeMessage, type LoginRecord } from "../schema.ts";
import { writeBatch, type WriteOutcome } from "../sink.ts";
import { SQS_CALL_DEADLINE_MS } from "../sqs.ts";
import { type Deadline, deadlineSignal, sleep } from "../timing.ts";
import type { Acknowledger, Refused } from "./acknowledge.ts";
import type { ConsumerContext } from "./context.ts";
import type { InFlight } from "./ledger.ts";
import { backoffDelay, retrying } from "./retry.ts";

/** How long a part-filled batch waits for more messages before it is written. */
const LINGER_MS = 20;
/** Transactions in progress at once. */
export const MAX_PARALLEL_WRITES = 2;

/** A valid message waiting for its batch. */
interface Pending {
  entry: InFlight;
  record: LoginRecord;
}

export interface Writer {
  /** Decode received messages: the valid ones join a batch, the invalid ones go to the DLQ. */
  accept(messages: readonly Message[]): void;
  /** Write what waits now, without lingering (at a stop). */
  flush(): void;
  /** Drop the linger timer, so that none outlives the run. */
  dispose(): void;
  /** Messages waiting for their batch to form. */
  readonly pending: number;
  /** Whether writes are failing: receive nothing more, it would only wait. */
  readonly paused: boolean;
}

export function createWriter(context: ConsumerContext, acknowledge: Acknowledger): Writer {
  const { settings, stats, ledger } = context;
  const { pool, strategy, batchSize, batchDeadlineMs, logger, observer } = settings;
  let pending: Pending[] = [];
  let lingerTimer: ReturnType<typeof setTimeout> | undefined;
  let activeWrites = 0;
  const writeWaiters: Array<() => void> = [];
  let paused = false;

  function accept(messages: readonly Message[]): void {
    const invalid: Refused[] = [];
    for (const message of messages) {
      const entry = ledger.receive(message);
      if (!entry) continue;
      const decoded = decodeMessage(message);
      if (decoded.ok) pending.push({ entry, record: decoded.record });
      else invalid.push({ entry, reason: decoded.reason });
    }
    if (invalid.length > 0) context.track(acknowledge.deadLetter(invalid));
    if (pending.length >= batchSize) flush();
    else if (pending.length > 0 && !lingerTimer) lingerTimer = setTimeout(flush, LINGER_MS);
  }

  function flush(): void {
    clearTimeout(lingerTimer);
    lingerTimer = undefined;
    while (pending.length > 0) {
      const batch = pending.slice(0, batchSize);
      pending = pending.slice(batchSize);
      // The deadline counts from now: waiting for a writer is part of not committing in time.
      const deadline = deadlineSignal(batchDeadlineMs, context.abandoning);
      context.track((async () => {
        await acquireWriter();
        try {
          await processBatch(batch, deadline);
        } finally {
          releaseWriter();
          deadline.clear();
        }
      })());
    }
  }

  async function acquireWriter(): Promise<void> {
    while (activeWrites >= MAX_PARALLEL_WRITES) await new Promise<void>((resolve) => writeWaiters.push(resolve));
    activeWrites++;
  }

  function releaseWriter(): void {
    activeWrites--;
    writeWaiters.shift()?.();
  }

  async function mask(batch: readonly Pending[]): Promise<MaskedRecord[]> {
    const masked: MaskedRecord[] = [];
    for (const { record } of batch) {
      const m = maskRecord(strategy, record);
      masked.push(m instanceof Promise ? await m : m);
    }
    return masked;
  }

  /** Write one batch, waiting out transient database faults until its deadline, then acknowledge it. */
  async function processBatch(batch: readonly Pending[], deadline: Deadline): Promise<void> {
    const startedAt = Date.now();
    const masked = await mask(batch);
    const outcome = await retrying(context, {
      service: "postgres",
      message: "Postgres unavailable, retrying the batch",
      fields: { size: batch.length },
      isTransient: (error) => classifyDatabaseError(error) === "transient",
      describe: describeDatabaseError,
      signal: deadline.signal,
      onTransient: writesFail,
    }, async () => {
      const written = await withDatabaseCallLimits({ signal: deadline.signal }, () => writeBatch(pool, strategy, masked));
      writesResume();
      return written;
    });
    if (!outcome) return await giveUp(batch.map((b) => b.entry), deadline);
    const report = { size: batch.length, rows: outcome.inserted, duplicates: outcome.duplicates, rejected: outcome.rejected.length, ms: Date.now() - startedAt };
    stats.loaded += outcome.inserted;
    stats.duplicates += outcome.duplicates;
    logger.debug("batch committed", { ...report });
    observer.onBatch?.(report);
    await acknowledgeOutcome(batch, outcome);
  }

  function acknowledgeOutcome(batch: readonly Pending[], outcome: WriteOutcome): Promise<unknown> {
    const entryOf = new Map(batch.map((b) => [b.record, b.entry]));
    return Promise.all([
      acknowledge.delete(outcome.committed.map((m) => entryOf.get(m.record)!)),
      acknowledge.deadLetter(outcome.rejected.map((r) => ({ entry: entryOf.get(r.masked.record)!, reason: r.reason }))),
    ]);
  }

  /**
   * A batch that cannot commit in time: at a stop its messages stay in flight for the stop
   * to release; past its own deadline they are released now, for any consumer to take,
   * rather than kept invisible by the heartbeat while this one cannot write them.
   */
  async function giveUp(entries: readonly InFlight[], deadline: Deadline): Promise<void> {
    if (!deadline.expired()) {
      logger.warn("giving up on a batch at shutdown; its messages return to the queue", { size: entries.length });
      return;
    }
    logger.warn("batch not committed by its deadline; releasing its messages to the queue", {
      size: entries.length, deadline_s: batchDeadlineMs / 1000,
    });
    // Whatever held it (no answer, a lock) holds the next batch too: take no more until a write goes through.
    writesFail();
    await acknowledge.release(entries, SQS_CALL_DEADLINE_MS);
  }

  /** Postgres failed a write: receive nothing more until it answers again. */
  function writesFail(): void {
    if (paused) return;
    paused = true;
    logger.warn("Postgres unavailable: receiving paused until it answers");
    context.track(probePostgres());
  }

  function writesResume(): void {
    if (!paused) return;
    paused = false;
    logger.info("Postgres answers again: receiving resumed");
    ledger.wake();
  }

  /**
   * While receiving is paused and no batch may be left to find out, ask Postgres itself:
   * with a write of no rows, which waits for the same table lock a batch would.
   */
  async function probePostgres(): Promise<void> {
    for (let attempt = 0; paused && !context.stopping(); attempt++) {
      await sleep(backoffDelay(attempt), context.receiving);
      if (!paused || context.stopping()) return;
      try {
        await withDatabaseCallLimits(
          { signal: context.receiving },
          () => pool.query(sql.unsafe`INSERT INTO user_logins (user_id) SELECT NULL WHERE false`),
        );
        writesResume();
      } catch {
        // Still down; the batches' retries say why.
      }
    }
  }

  return {
    accept,
    flush,
    dispose: () => clearTimeout(lingerTimer),
    get pending() {
      return pending.length;
    },
    get paused() {
      return paused;
    },
  };
}
