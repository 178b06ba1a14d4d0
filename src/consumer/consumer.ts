/**
 * The consumer: receive, write, acknowledge, and stop cleanly. Receives run in parallel
 * and wait for room; valid messages are batched into one transaction each, invalid ones
 * dead-lettered; committed messages are deleted in batches of 10; a heartbeat keeps slow
 * work invisible. A stop receives no more, gives what is in flight its grace, then abandons
 * what is left (its connections closed, so open transactions roll back) and hands it back.
 *
 * @module
 */
import { describeDatabaseError, errorCode, FatalError, firstLineScrubbed } from "../errors.ts";
import { classifyDatabaseError } from "../postgres-errors.ts";
import { describeSqsError, readQueueDepth } from "../sqs.ts";
import { sleep, waitAtMost } from "../timing.ts";
import { heartbeat, release } from "./acknowledge.ts";
import type { ConsumerContext } from "./context.ts";
import { createLedger, type InFlight } from "./ledger.ts";
import {
  type Consumer,
  type ConsumerOptions,
  type ConsumerSettings,
  type ConsumerStats,
  resolveOptions,
} from "./options.ts";
import { createReceiver, type Receiver } from "./receive.ts";
import { createWriter, type Writer } from "./write.ts";

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

/** A consumer's parts, and the state of its stop. */
interface ConsumerState {
  readonly context: ConsumerContext;
  readonly writer: Writer;
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
 * Create a consumer. Every call to SQS and Postgres has a deadline, what is held in flight
 * is bounded in messages and bytes, and a stop ends within its grace whatever blocks.
 *
 * @example
 * ```ts
 * const consumer = createConsumer({ sqs, pool, strategy, queueUrl, dlqUrl, drain: true });
 * const stats = await consumer.run();
 * ```
 */
export function createConsumer(options: ConsumerOptions): Consumer {
  const state = createState(resolveOptions(options));
  const { settings, stats, ledger } = state.context;
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

function createState(settings: ConsumerSettings): ConsumerState {
  const receiving = new AbortController();
  const abandoning = new AbortController();
  const work = new Set<Promise<void>>();
  const context: ConsumerContext = {
    settings,
    stats: {
      received: 0,
      loaded: 0,
      duplicates: 0,
      deadLettered: 0,
      leftInQueue: 0,
      released: 0,
      retries: 0,
      startedAt: Date.now(),
    },
    ledger: createLedger(settings.visibilityTimeoutSeconds * 1000),
    receiving: receiving.signal,
    abandoning: abandoning.signal,
    stopping: () => state.stopping,
    track(promise) {
      const tracked = promise.catch((error) => fail(state, error)).finally(() => work.delete(tracked));
      work.add(tracked);
    },
  };
  const writer = createWriter(context);
  const receiver = createReceiver(context, writer.accept, () => writer.paused);
  const state: ConsumerState = {
    context,
    writer,
    receiver,
    work,
    receiving,
    abandoning,
    stopping: false,
    stopDeadline: 0,
  };
  return state;
}

function fail(state: ConsumerState, error: unknown): void {
  if (!state.fatal) {
    state.fatal = asFatal(error);
    state.context.settings.logger.error("stopping after a failure that waiting cannot fix", {
      reason: state.fatal.message,
    });
  }
  beginStop(state);
}

/** Stop receiving; what is in flight has the grace from now to finish. */
function beginStop(state: ConsumerState): void {
  if (state.stopping) return;
  state.stopping = true;
  state.stopDeadline = Date.now() + state.context.settings.shutdownGraceMs;
  state.receiving.abort();
  state.receiver.abortParked();
  state.context.ledger.wake();
}

/** Run until drained or stopped; resolves with the final counters. */
async function run(state: ConsumerState): Promise<ConsumerStats> {
  const { context, writer, receiver } = state;
  const { settings, stats } = context;
  // A quarter of the timeout: with a 1 s floor, a 2 s queue timeout let extensions land
  // at the very moment messages became visible again.
  const heartbeatMs = Math.max(HEARTBEAT_MIN_MS, (settings.visibilityTimeoutSeconds * 1000) / 4);
  const heartbeatTimer = setInterval(() => void heartbeat(context), heartbeatMs);
  try {
    const pollers = Array.from(
      { length: settings.concurrency },
      () => receiver.poll().catch((error) => fail(state, error)),
    );
    if (settings.drain) void watchDrain(state);
    await Promise.all(pollers);
    writer.flush();
    await finishInFlight(state);
    await releaseAll(state);
  } finally {
    clearInterval(heartbeatTimer);
    writer.dispose();
    stats.finishedAt = Date.now();
  }
  if (state.fatal) throw state.fatal;
  return stats;
}

/** A failure that stops the consumer, as one line that quotes no data. */
function asFatal(error: unknown): Error {
  if (error instanceof FatalError) return error;
  if (classifyDatabaseError(error) === "fatal" && errorCode(error) !== undefined) {
    return new FatalError(`Postgres refused the write: ${describeDatabaseError(error)}`);
  }
  // Scrubbed like a database error: an unexpected error may quote a value.
  return new FatalError(`Unexpected failure: ${firstLineScrubbed(error)}`);
}

/** In drain mode: done when nothing is ours and the queue holds only what we left in it, still hidden. */
async function watchDrain(state: ConsumerState): Promise<void> {
  const { context, writer, receiver, work } = state;
  const { ledger, settings } = context;
  const idle = () => ledger.size === 0 && writer.pending === 0 && work.size === 0;
  while (!state.stopping) {
    await sleep(DRAIN_CHECK_MS, context.receiving);
    if (state.stopping || !idle() || Date.now() - receiver.lastEmptyAt > DRAIN_EMPTY_RECEIVE_MS) continue;
    try {
      const depth = await readQueueDepth(settings.sqs, settings.queueUrl, context.receiving);
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
async function finishInFlight(state: ConsumerState): Promise<void> {
  const { work, context: { settings, ledger } } = state;
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
async function releaseAll(state: ConsumerState): Promise<void> {
  const { context, receiver } = state;
  const { ledger, settings } = context;
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
  await release(context, [...entries, ...left], RELEASE_DEADLINE_MS, visibleIn);
}
