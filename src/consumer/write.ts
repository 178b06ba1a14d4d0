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
import { type MaskedRecord, maskRecord } from "../masking.ts";
import { classifyDatabaseError } from "../postgres-errors.ts";
import { decodeMessage, type LoginRecord } from "../schema.ts";
import { type CommitTrail, writeBatch, type WriteOutcome } from "../write-batch.ts";
import { isFifoQueue, SQS_CALL_DEADLINE_MS } from "../sqs.ts";
import { type Deadline, deadlineSignal, sleep } from "../timing.ts";
import { deadLetter, deleteMessages, type Refused, release } from "./acknowledge.ts";
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
  /** Which receive it came in, counted from 1: a FIFO receive is never split across batches. */
  receive: number;
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

interface WriterState {
  readonly context: ConsumerContext;
  pending: Pending[];
  lingerTimer?: ReturnType<typeof setTimeout>;
  activeWrites: number;
  readonly writeWaiters: Array<() => void>;
  paused: boolean;
  receives: number;
}

export function createWriter(context: ConsumerContext): Writer {
  const state: WriterState = { context, pending: [], activeWrites: 0, writeWaiters: [], paused: false, receives: 0 };
  return {
    accept: (messages) => accept(state, messages),
    flush: () => flush(state),
    dispose: () => clearTimeout(state.lingerTimer),
    get pending() {
      return state.pending.length;
    },
    get paused() {
      return state.paused;
    },
  };
}

function accept(state: WriterState, messages: readonly Message[]): void {
  const { context } = state;
  const invalid: Refused[] = [];
  const receive = ++state.receives;
  for (const message of messages) {
    const entry = context.ledger.receive(message);
    if (!entry) continue;
    const decoded = decodeMessage(message);
    if (decoded.ok) state.pending.push({ entry, record: decoded.record, receive });
    else invalid.push({ entry, reason: decoded.reason });
  }
  if (invalid.length > 0) context.track(deadLetter(context, invalid));
  if (state.pending.length >= context.settings.batchSize) flush(state);
  else if (state.pending.length > 0 && !state.lingerTimer) {
    state.lingerTimer = setTimeout(() => flush(state), LINGER_MS);
  }
}

function flush(state: WriterState): void {
  const { context } = state;
  const { batchDeadlineMs } = context.settings;
  clearTimeout(state.lingerTimer);
  state.lingerTimer = undefined;
  while (state.pending.length > 0) {
    const batch = state.pending.slice(0, batchEnd(state));
    state.pending = state.pending.slice(batch.length);
    // The deadline counts from now: waiting for a writer is part of not committing in time.
    const deadline = deadlineSignal(batchDeadlineMs, context.abandoning);
    context.track((async () => {
      await acquireWriter(state);
      try {
        await processBatch(state, batch, deadline);
      } finally {
        releaseWriter(state);
        deadline.clear();
      }
    })());
  }
}

/**
 * Where the next batch ends: at the batch size, except on a FIFO queue, where it ends with
 * the receive it reached (at most 9 more rows). SQS hands out a FIFO group's next messages
 * only once its last ones are gone, so the messages of a group in flight all came in one
 * receive, in order; kept in one transaction, they commit in that order.
 */
function batchEnd(state: WriterState): number {
  const { batchSize, queueUrl } = state.context.settings;
  let end = Math.min(batchSize, state.pending.length);
  if (!isFifoQueue(queueUrl)) return end;
  while (end < state.pending.length && state.pending[end]!.receive === state.pending[end - 1]!.receive) end++;
  return end;
}

async function acquireWriter(state: WriterState): Promise<void> {
  while (state.activeWrites >= MAX_PARALLEL_WRITES) {
    await new Promise<void>((resolve) => state.writeWaiters.push(resolve));
  }
  state.activeWrites++;
}

function releaseWriter(state: WriterState): void {
  state.activeWrites--;
  state.writeWaiters.shift()?.();
}

async function mask(state: WriterState, batch: readonly Pending[]): Promise<MaskedRecord[]> {
  const { strategy } = state.context.settings;
  const masked: MaskedRecord[] = [];
  for (const { record } of batch) {
    const m = maskRecord(strategy, record);
    masked.push(m instanceof Promise ? await m : m);
  }
  return masked;
}

/** Write one batch, waiting out transient database faults until its deadline, then acknowledge it. */
async function processBatch(state: WriterState, batch: readonly Pending[], deadline: Deadline): Promise<void> {
  const { context } = state;
  const { pool, strategy, logger, observer } = context.settings;
  const startedAt = Date.now();
  const masked = await mask(state, batch);
  // Across retries: a COMMIT whose answer was lost is looked up, not written again.
  const trail: CommitTrail = {};
  const outcome = await retrying(context, {
    service: "postgres",
    message: "Postgres unavailable, retrying the batch",
    fields: { size: batch.length },
    isTransient: (error) => classifyDatabaseError(error) === "transient",
    describe: describeDatabaseError,
    signal: deadline.signal,
    onTransient: () => writesFail(state),
  }, async () => {
    const written = await withDatabaseCallLimits(
      { signal: deadline.signal },
      () => writeBatch(pool, strategy, masked, trail),
    );
    writesResume(state);
    return written;
  });
  if (!outcome) return await giveUp(state, batch.map((b) => b.entry), deadline);
  const report = {
    size: batch.length,
    rows: outcome.inserted,
    duplicates: outcome.duplicates,
    rejected: outcome.rejected.length,
    ms: Date.now() - startedAt,
  };
  context.stats.loaded += outcome.inserted;
  context.stats.duplicates += outcome.duplicates;
  logger.debug("batch committed", { ...report });
  observer.onBatch?.(report);
  await acknowledgeOutcome(context, batch, outcome);
}

/** Delete what committed; dead-letter what Postgres refused, with its reason. */
async function acknowledgeOutcome(
  context: ConsumerContext,
  batch: readonly Pending[],
  outcome: WriteOutcome,
): Promise<void> {
  const entryOf = new Map(batch.map((b) => [b.record, b.entry]));
  await Promise.all([
    deleteMessages(context, outcome.committed.map((m) => entryOf.get(m.record)!)),
    deadLetter(context, outcome.rejected.map((r) => ({ entry: entryOf.get(r.masked.record)!, reason: r.reason }))),
  ]);
}

/**
 * A batch that cannot commit in time: at a stop its messages stay in flight for the stop
 * to release; past its own deadline they are released now, for any consumer to take,
 * rather than kept invisible by the heartbeat while this one cannot write them.
 */
async function giveUp(state: WriterState, entries: readonly InFlight[], deadline: Deadline): Promise<void> {
  const { logger, batchDeadlineMs } = state.context.settings;
  if (!deadline.expired()) {
    logger.warn("giving up on a batch at shutdown; its messages return to the queue", { size: entries.length });
    return;
  }
  logger.warn("batch not committed by its deadline; releasing its messages to the queue", {
    size: entries.length,
    deadline_s: batchDeadlineMs / 1000,
  });
  // Whatever held it (no answer, a lock) holds the next batch too: take no more until a write goes through.
  writesFail(state);
  await release(state.context, entries, SQS_CALL_DEADLINE_MS);
}

/** Postgres failed a write: receive nothing more until it answers again. */
function writesFail(state: WriterState): void {
  if (state.paused) return;
  state.paused = true;
  state.context.settings.logger.warn("Postgres unavailable: receiving paused until it answers", {
    waiting_for: "postgres",
  });
  state.context.track(probePostgres(state));
}

function writesResume(state: WriterState): void {
  if (!state.paused) return;
  state.paused = false;
  state.context.settings.logger.info("Postgres answers again: receiving resumed");
  state.context.ledger.wake();
}

/**
 * While receiving is paused and no batch may be left to find out, ask Postgres itself:
 * with a write of no rows, which waits for the same table lock a batch would.
 */
async function probePostgres(state: WriterState): Promise<void> {
  const { context } = state;
  for (let attempt = 0; state.paused && !context.stopping(); attempt++) {
    await sleep(backoffDelay(attempt), context.receiving);
    if (!state.paused || context.stopping()) return;
    try {
      await withDatabaseCallLimits(
        { signal: context.receiving },
        () => context.settings.pool.query(sql.unsafe`INSERT INTO user_logins (user_id) SELECT NULL WHERE false`),
      );
      writesResume(state);
    } catch {
      // Still down; the batches' retries say why.
    }
  }
}
