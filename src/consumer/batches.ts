/**
 * Batching: received messages are decoded by the handler, the valid ones batched (a batch
 * is full at `batchSize`, or sent after a short linger) and handed to the handler to write,
 * at most two at a time; invalid ones go to the DLQ. A batch waits out transient faults
 * until its deadline, then is released for any consumer; while writes fail, receiving
 * pauses until the handler's probe says they would go through.
 *
 * @module
 */
import type { Message } from "@aws-sdk/client-sqs";
import type { Logger } from "../log.ts";
import { SQS_CALL_DEADLINE_MS } from "../sqs.ts";
import { type Deadline, deadlineSignal, sleep } from "../timing.ts";
import type { Acknowledger, Refused } from "./acknowledge.ts";
import type { InFlight, Ledger } from "./ledger.ts";
import type { ConsumerObserver, ConsumerStats } from "./options.ts";
import type { BatchHandler, BatchOutcome } from "./port.ts";
import { backoffDelay, type Retrying } from "./retry.ts";

/** How long a part-filled batch waits for more messages before it is written. */
const LINGER_MS = 20;
/** Batches being written at once. */
export const MAX_PARALLEL_WRITES = 2;

/** What batching reads: the handler, the bounds, how to acknowledge, and the stop. */
export interface BatcherDeps<T> {
  handler: BatchHandler<T>;
  batchSize: number;
  batchDeadlineMs: number;
  /** A FIFO queue: a receive is never split across batches. */
  fifo: boolean;
  ledger: Ledger;
  stats: Pick<ConsumerStats, "loaded" | "duplicates">;
  logger: Logger;
  observer: ConsumerObserver;
  retrying: Retrying;
  acknowledger: Acknowledger;
  /** Aborted when a stop begins: the probe ends. */
  receiving: AbortSignal;
  /** Aborted when a stop's grace ends: batches still writing are abandoned. */
  abandoning: AbortSignal;
  stopping(): boolean;
  /** Keep a piece of work that a stop waits for; its failure stops the consumer. */
  track(work: Promise<void>): void;
}

/** A valid message waiting for its batch. */
interface Pending<T> {
  entry: InFlight;
  value: T;
  /** Which receive it came in, counted from 1: a FIFO receive is never split across batches. */
  receive: number;
}

export interface Batcher {
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

interface BatcherState<T> {
  readonly deps: BatcherDeps<T>;
  pending: Pending<T>[];
  lingerTimer?: ReturnType<typeof setTimeout>;
  activeWrites: number;
  readonly writeWaiters: Array<() => void>;
  paused: boolean;
  receives: number;
}

export function createBatcher<T>(deps: BatcherDeps<T>): Batcher {
  const state: BatcherState<T> = { deps, pending: [], activeWrites: 0, writeWaiters: [], paused: false, receives: 0 };
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

function accept<T>(state: BatcherState<T>, messages: readonly Message[]): void {
  const { deps } = state;
  const invalid: Refused[] = [];
  const receive = ++state.receives;
  for (const message of messages) {
    const entry = deps.ledger.receive(message);
    if (!entry) continue;
    const decoded = deps.handler.decode(message);
    if (decoded.ok) state.pending.push({ entry, value: decoded.value, receive });
    else invalid.push({ entry, reason: decoded.reason });
  }
  if (invalid.length > 0) deps.track(deps.acknowledger.deadLetter(invalid));
  if (state.pending.length >= deps.batchSize) flush(state);
  else if (state.pending.length > 0 && !state.lingerTimer) {
    state.lingerTimer = setTimeout(() => flush(state), LINGER_MS);
  }
}

function flush<T>(state: BatcherState<T>): void {
  const { deps } = state;
  clearTimeout(state.lingerTimer);
  state.lingerTimer = undefined;
  while (state.pending.length > 0) {
    const batch = state.pending.slice(0, batchEnd(state));
    state.pending = state.pending.slice(batch.length);
    // The deadline counts from now: waiting for a writer is part of not committing in time.
    const deadline = deadlineSignal(deps.batchDeadlineMs, deps.abandoning);
    deps.track((async () => {
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
 * the receive it reached (at most 9 more messages). SQS hands out a FIFO group's next
 * messages only once its last ones are gone, so the messages of a group in flight all came
 * in one receive, in order; kept in one batch, they are written in that order.
 */
function batchEnd<T>(state: BatcherState<T>): number {
  const { batchSize, fifo } = state.deps;
  let end = Math.min(batchSize, state.pending.length);
  if (!fifo) return end;
  while (end < state.pending.length && state.pending[end]!.receive === state.pending[end - 1]!.receive) end++;
  return end;
}

async function acquireWriter<T>(state: BatcherState<T>): Promise<void> {
  while (state.activeWrites >= MAX_PARALLEL_WRITES) {
    await new Promise<void>((resolve) => state.writeWaiters.push(resolve));
  }
  state.activeWrites++;
}

function releaseWriter<T>(state: BatcherState<T>): void {
  state.activeWrites--;
  state.writeWaiters.shift()?.();
}

/** Write one batch, waiting out transient faults until its deadline, then acknowledge it. */
async function processBatch<T>(
  state: BatcherState<T>,
  batch: readonly Pending<T>[],
  deadline: Deadline,
): Promise<void> {
  const { deps } = state;
  const { handler, logger, observer, stats } = deps;
  const startedAt = Date.now();
  let prepared;
  try {
    prepared = await handler.prepare(batch.map((b) => b.value));
  } catch (error) {
    throw handler.fatal(error);
  }
  const outcome = await deps.retrying({
    service: handler.service,
    message: `${handler.serviceName} unavailable, retrying the batch`,
    fields: { size: batch.length },
    isTransient: (error) => handler.classify(error) === "transient",
    describe: (error) => handler.describe(error),
    fatal: (error) => handler.fatal(error),
    signal: deadline.signal,
    onTransient: () => writesFail(state),
  }, async () => {
    const written = await prepared.write(deadline.signal);
    writesResume(state);
    return written;
  });
  if (!outcome) return await giveUp(state, batch.map((b) => b.entry), deadline);
  const report = {
    size: batch.length,
    rows: outcome.loaded,
    duplicates: outcome.duplicates,
    rejected: outcome.refused.length,
    ms: Date.now() - startedAt,
  };
  stats.loaded += outcome.loaded;
  stats.duplicates += outcome.duplicates;
  logger.debug("batch committed", { ...report });
  observer.onBatch?.(report);
  await acknowledgeOutcome(deps.acknowledger, batch, outcome);
}

/** Delete what is done; dead-letter what the handler refused, with its reason. */
async function acknowledgeOutcome<T>(
  acknowledger: Acknowledger,
  batch: readonly Pending<T>[],
  outcome: BatchOutcome,
): Promise<void> {
  const refused = new Set(outcome.refused.map((r) => r.index));
  await Promise.all([
    acknowledger.deleteMessages(batch.filter((_, i) => !refused.has(i)).map((b) => b.entry)),
    acknowledger.deadLetter(outcome.refused.map((r) => ({ entry: batch[r.index]!.entry, reason: r.reason }))),
  ]);
}

/**
 * A batch that cannot commit in time: at a stop its messages stay in flight for the stop
 * to release; past its own deadline they are released now, for any consumer to take,
 * rather than kept invisible by the heartbeat while this one cannot write them.
 */
async function giveUp<T>(state: BatcherState<T>, entries: readonly InFlight[], deadline: Deadline): Promise<void> {
  const { logger, batchDeadlineMs, acknowledger } = state.deps;
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
  await acknowledger.release(entries, SQS_CALL_DEADLINE_MS);
}

/** A write failed: receive nothing more until the handler's service answers again. */
function writesFail<T>(state: BatcherState<T>): void {
  if (state.paused) return;
  const { handler, logger, track } = state.deps;
  state.paused = true;
  logger.warn(`${handler.serviceName} unavailable: receiving paused until it answers`, {
    waiting_for: handler.service,
  });
  track(probe(state));
}

function writesResume<T>(state: BatcherState<T>): void {
  if (!state.paused) return;
  const { handler, logger, ledger } = state.deps;
  state.paused = false;
  logger.info(`${handler.serviceName} answers again: receiving resumed`);
  ledger.wake();
}

/** While receiving is paused and no batch may be left to find out, ask the handler's own probe. */
async function probe<T>(state: BatcherState<T>): Promise<void> {
  const { handler, receiving, stopping } = state.deps;
  for (let attempt = 0; state.paused && !stopping(); attempt++) {
    await sleep(backoffDelay(attempt), receiving);
    if (!state.paused || stopping()) return;
    try {
      await handler.probe(receiving);
      writesResume(state);
    } catch {
      // Still down; the batches' retries say why.
    }
  }
}
