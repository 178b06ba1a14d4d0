/**
 * The SQS source: receive, hold, batch, acknowledge, and stop cleanly, handing each batch
 * to a `BatchHandler` (port.ts) to write. Receives run in parallel and wait for room;
 * valid messages are batched, invalid ones dead-lettered; what is done is deleted in
 * batches of 10; a heartbeat keeps slow work invisible. A stop receives no more, gives what
 * is in flight its grace, then abandons what is left and hands it back.
 *
 * @module
 */
import { asFatalError } from "../errors.ts";
import { describeSqsError, isFifoQueue, readQueueDepth } from "../sqs.ts";
import { sleep, waitAtMost } from "../timing.ts";
import { type Acknowledger, createAcknowledger } from "./acknowledge.ts";
import { type Batcher, createBatcher } from "./batches.ts";
import { createLedger, type InFlight, type Ledger } from "./ledger.ts";
import {
  type Consumer,
  type ConsumerStats,
  resolveOptions,
  type SourceSettings,
  type SqsSourceOptions,
} from "./options.ts";
import { createReceiver, type Receiver } from "./receive.ts";
import { createRetrying } from "./retry.ts";

const HEARTBEAT_MIN_MS = 100;
/** How often drain mode looks whether it is done; the run ends at most this late. */
const DRAIN_CHECK_MS = 50;
/** Drain mode reads the queue's depth only within this long of an empty receive. */
const DRAIN_EMPTY_RECEIVE_MS = 1_000;
/** How often a stop says what it still waits for. */
const STOP_PROGRESS_MS = 5_000;
/** After the grace, how long abandoned work gets to unwind (closing connections) before release. */
const ABANDON_WAIT_MS = 2_000;
/** Releasing at the end of a stop: one short try, then the messages return after their timeout. */
const RELEASE_DEADLINE_MS = 2_000;

/** A source's parts, and the state of its stop. */
interface SourceState {
  readonly settings: SourceSettings;
  readonly stats: ConsumerStats;
  readonly ledger: Ledger;
  readonly acknowledger: Acknowledger;
  readonly batcher: Batcher;
  readonly receiver: Receiver;
  readonly work: Set<Promise<void>>;
  readonly receiving: AbortController;
  readonly abandoning: AbortController;
  stopping: boolean;
  /** When the stop's grace ends. */
  stopDeadline: number;
  fatal?: Error;
}

/**
 * Create an SQS source over a handler. Every SQS call has a deadline, every write the
 * batch's, what is held in flight is bounded in messages and bytes, and a stop ends within
 * its grace whatever blocks.
 *
 * @example
 * ```ts
 * const source = createSqsSource({ sqs, queueUrl, dlqUrl, handler, drain: true });
 * const stats = await source.run();
 * ```
 */
export function createSqsSource<T>(options: SqsSourceOptions<T>): Consumer {
  const state = createState(resolveOptions(options), options.handler);
  const { settings, stats, ledger } = state;
  return {
    run: () => run(state),
    stats,
    stop() {
      if (state.stopping) return;
      beginStop(state);
      // What someone who pressed Ctrl-C wants to see: how much is in flight, and how long it may take.
      settings.logger.info("stopping: finishing what is in flight", {
        in_flight: ledger.size,
        wait_until: new Date(state.stopDeadline).toISOString(),
        grace_s: settings.shutdownGraceMs / 1000,
      });
    },
    get inFlight() {
      return ledger.size;
    },
    get inFlightBytes() {
      return ledger.bytes;
    },
  };
}

function createState<T>(settings: SourceSettings, handler: SqsSourceOptions<T>["handler"]): SourceState {
  const { queueUrl, logger, observer } = settings;
  const receiving = new AbortController();
  const abandoning = new AbortController();
  const work = new Set<Promise<void>>();
  const stats: ConsumerStats = {
    received: 0,
    loaded: 0,
    duplicates: 0,
    deadLettered: 0,
    leftInQueue: 0,
    released: 0,
    retries: 0,
    startedAt: Date.now(),
  };
  const ledger = createLedger(settings.visibilityTimeoutSeconds * 1000);
  const retrying = createRetrying(stats, logger, observer);
  const stopping = () => state.stopping;
  const track = (promise: Promise<void>) => {
    const tracked = promise.catch((error) => fail(state, error)).finally(() => work.delete(tracked));
    work.add(tracked);
  };
  const acknowledger = createAcknowledger({
    ...settings,
    ledger,
    stats,
    retrying,
    abandoning: abandoning.signal,
  });
  const batcher = createBatcher({
    handler,
    batchSize: settings.batchSize,
    batchDeadlineMs: settings.batchDeadlineMs,
    fifo: isFifoQueue(queueUrl),
    ledger,
    stats,
    logger,
    observer,
    retrying,
    acknowledger,
    receiving: receiving.signal,
    abandoning: abandoning.signal,
    stopping,
    track,
  });
  const receiver = createReceiver({
    ...settings,
    ledger,
    stats,
    retrying,
    receiving: receiving.signal,
    stopping,
    deliver: batcher.accept,
    paused: () => batcher.paused,
  });
  const state: SourceState = {
    settings,
    stats,
    ledger,
    acknowledger,
    batcher,
    receiver,
    work,
    receiving,
    abandoning,
    stopping: false,
    stopDeadline: 0,
  };
  return state;
}

function fail(state: SourceState, error: unknown): void {
  if (!state.fatal) {
    // The handler's and SQS's failures arrive as their own (`fatal` of each); anything else was not expected.
    state.fatal = asFatalError(error);
    state.settings.logger.error("stopping after a failure that waiting cannot fix", {
      reason: state.fatal.message,
    });
  }
  beginStop(state);
}

/** Stop receiving; what is in flight has the grace from now to finish. */
function beginStop(state: SourceState): void {
  if (state.stopping) return;
  state.stopping = true;
  state.stopDeadline = Date.now() + state.settings.shutdownGraceMs;
  state.receiving.abort();
  state.receiver.abortParked();
  state.ledger.wake();
}

/** Run until drained or stopped; resolves with the final counters. */
async function run(state: SourceState): Promise<ConsumerStats> {
  const { settings, stats, batcher, receiver, acknowledger } = state;
  // A quarter of the timeout: with a 1 s floor, a 2 s queue timeout let extensions land
  // at the very moment messages became visible again.
  const heartbeatMs = Math.max(HEARTBEAT_MIN_MS, (settings.visibilityTimeoutSeconds * 1000) / 4);
  const heartbeatTimer = setInterval(() => void acknowledger.heartbeat(), heartbeatMs);
  try {
    const pollers = Array.from(
      { length: settings.concurrency },
      () => receiver.poll().catch((error) => fail(state, error)),
    );
    if (settings.drain) void watchDrain(state);
    await Promise.all(pollers);
    batcher.flush();
    await finishInFlight(state);
    await releaseAll(state);
  } finally {
    clearInterval(heartbeatTimer);
    batcher.dispose();
    stats.finishedAt = Date.now();
  }
  if (state.fatal) throw state.fatal;
  return stats;
}

/** In drain mode: done when nothing is ours and the queue holds only what we left in it, still hidden. */
async function watchDrain(state: SourceState): Promise<void> {
  const { batcher, receiver, work, ledger, settings } = state;
  const idle = () => ledger.size === 0 && batcher.pending === 0 && work.size === 0;
  while (!state.stopping) {
    await sleep(DRAIN_CHECK_MS, state.receiving.signal);
    if (state.stopping || !idle() || Date.now() - receiver.lastEmptyAt > DRAIN_EMPTY_RECEIVE_MS) continue;
    try {
      const depth = await readQueueDepth(settings.sqs, settings.queueUrl, state.receiving.signal);
      // What we left in the queue can only be in flight (hidden by our receive): anything
      // visible or delayed may be loadable, and what SQS's redrive moved is not there at all.
      if (depth.visible + depth.delayed === 0 && depth.inFlight <= ledger.leftInQueue && idle()) {
        settings.logger.debug("queue drained", { left_in_queue: ledger.leftInQueue });
        beginStop(state);
      }
    } catch (error) {
      if (!state.stopping) settings.logger.warn("could not read queue depth", { reason: describeSqsError(error) });
    }
  }
}

/**
 * Wait for what is in flight to finish until the grace ends, saying what it waits for;
 * then abandon it (calls aborted, connections closed, so open transactions roll back) and
 * give it a moment to unwind. What is left is released by `releaseAll`.
 */
async function finishInFlight(state: SourceState): Promise<void> {
  const { work, settings, ledger } = state;
  const settled = (async () => {
    while (work.size > 0) await Promise.all([...work]);
  })();
  if (work.size === 0) return;
  const progress = setInterval(() =>
    settings.logger.info("stopping: still waiting", {
      in_flight: ledger.size,
      seconds_left: Math.max(0, Math.round((state.stopDeadline - Date.now()) / 1000)),
    }), STOP_PROGRESS_MS);
  try {
    await waitAtMost(settled, state.stopDeadline - Date.now());
  } finally {
    clearInterval(progress);
  }
  if (work.size === 0) return;
  settings.logger.warn("stop grace over: abandoning what is in flight", { in_flight: ledger.size });
  state.abandoning.abort();
  await waitAtMost(settled, ABANDON_WAIT_MS);
}

/**
 * At the end of a run: hand back what is in flight, and what was left for the redrive
 * policy. A long poll aborted by the stop lives on in SQS until its wait ends, and SQS
 * gives it the next visible message, which nobody then reads: a message released at once
 * would go there and stay invisible for a whole timeout. So it becomes visible when
 * the last of those polls has ended; after a full grace (polls wait no longer) that is now.
 */
async function releaseAll(state: SourceState): Promise<void> {
  const { receiver, ledger, settings, acknowledger } = state;
  const entries = ledger.entries();
  // A receipt of a message left in the queue may be stale by now (received again since): harmless.
  const left = ledger.takeLeftInQueue().map((receiptHandle) => ({ receiptHandle }) as InFlight);
  if (entries.length === 0 && left.length === 0) return;
  // A second more than they may live: a poll that ends takes what is visible at that moment.
  const endsAt = receiver.abortedPollsEndAt;
  const visibleIn = endsAt > Date.now() ? Math.ceil((endsAt - Date.now()) / 1000) + 1 : 0;
  if (entries.length > 0) {
    settings.logger.warn("releasing unfinished messages to the queue", {
      count: entries.length,
      visible_in_s: visibleIn,
    });
  }
  await acknowledger.release([...entries, ...left], RELEASE_DEADLINE_MS, visibleIn);
}
