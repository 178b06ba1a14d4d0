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
import { type Acknowledger, createAcknowledger } from "./acknowledge.ts";
import type { ConsumerContext } from "./context.ts";
import { createLedger, type InFlight, type Ledger } from "./ledger.ts";
import { type Consumer, type ConsumerOptions, type ConsumerSettings, type ConsumerStats, resolveOptions } from "./options.ts";
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

/** A stop in progress: when it began to count, and how it ends what is in flight. */
interface StopState {
  stopping: boolean;
  deadline: number;
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
  const settings = resolveOptions(options);
  const stats: ConsumerStats = {
    received: 0, loaded: 0, duplicates: 0, deadLettered: 0, leftInQueue: 0, released: 0, retries: 0, startedAt: Date.now(),
  };
  const ledger = createLedger();
  const receiving = new AbortController();
  const abandoning = new AbortController();
  const work = new Set<Promise<void>>();
  const stop: StopState = { stopping: false, deadline: 0 };
  const context: ConsumerContext = {
    settings, stats, ledger,
    receiving: receiving.signal,
    abandoning: abandoning.signal,
    stopping: () => stop.stopping,
    track(promise) {
      const tracked = promise.catch(fail).finally(() => work.delete(tracked));
      work.add(tracked);
    },
  };
  const acknowledge = createAcknowledger(context);
  const writer = createWriter(context, acknowledge);
  const receiver = createReceiver(context, writer.accept, () => writer.paused);

  function fail(error: unknown): void {
    if (!stop.fatal) {
      stop.fatal = asFatal(error);
      settings.logger.error("stopping after a failure that waiting cannot fix", { reason: stop.fatal.message });
    }
    beginStop();
  }

  /** Stop receiving; what is in flight has the grace from now to finish. */
  function beginStop(): void {
    if (stop.stopping) return;
    stop.stopping = true;
    stop.deadline = Date.now() + settings.shutdownGraceMs;
    receiving.abort();
    receiver.abortParked();
    ledger.wake();
  }

  async function run(): Promise<ConsumerStats> {
    // A quarter of the timeout: with a 1 s floor, a 2 s queue timeout let extensions land
    // at the very moment messages became visible again (found by the slow-batch test).
    const heartbeatMs = Math.max(HEARTBEAT_MIN_MS, (settings.visibilityTimeoutSeconds * 1000) / 4);
    const heartbeatTimer = setInterval(() => void acknowledge.heartbeat(), heartbeatMs);
    try {
      const pollers = Array.from({ length: settings.concurrency }, () => receiver.poll().catch(fail));
      if (settings.drain) void watchDrain({ context, ledger, writer, receiver, work, done: beginStop });
      await Promise.all(pollers);
      writer.flush();
      await finishInFlight(settings, ledger, work, stop, abandoning);
      await releaseAll(ledger, acknowledge, receiver, settings);
    } finally {
      clearInterval(heartbeatTimer);
      writer.dispose();
      stats.finishedAt = Date.now();
    }
    if (stop.fatal) throw stop.fatal;
    return stats;
  }

  return {
    run,
    stats,
    stop() {
      if (stop.stopping) return;
      beginStop();
      // What someone who pressed Ctrl-C wants to see: how much is in flight, and how long it may take.
      settings.logger.info("stopping: finishing what is in flight", {
        in_flight: ledger.size, wait_until: new Date(stop.deadline).toISOString(), grace_s: settings.shutdownGraceMs / 1000,
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

/** A failure that stops the consumer, as one line that quotes no data. */
function asFatal(error: unknown): Error {
  if (error instanceof FatalError) return error;
  if (classifyDatabaseError(error) === "fatal" && errorCode(error) !== undefined) {
    return new FatalError(`Postgres refused the write: ${describeDatabaseError(error)}`);
  }
  // Scrubbed like a database error: an unexpected error may quote a value.
  return new FatalError(`Unexpected failure: ${firstLineScrubbed(error)}`);
}

/** In drain mode: done when nothing is ours and the queue holds only what we left in it. */
async function watchDrain(parts: {
  context: ConsumerContext;
  ledger: Ledger;
  writer: Writer;
  receiver: Receiver;
  work: ReadonlySet<Promise<void>>;
  done(): void;
}): Promise<void> {
  const { context, ledger, writer, receiver, work, done } = parts;
  const idle = () => ledger.size === 0 && writer.pending === 0 && work.size === 0;
  while (!context.stopping()) {
    await sleep(DRAIN_CHECK_MS, context.receiving);
    if (context.stopping() || !idle() || Date.now() - receiver.lastEmptyAt > DRAIN_EMPTY_RECEIVE_MS) continue;
    try {
      const depth = await readQueueDepth(context.settings.sqs, context.settings.queueUrl, context.receiving);
      if (depth.visible + depth.inFlight + depth.delayed <= ledger.leftInQueue && idle()) {
        context.settings.logger.debug("queue drained", { left_in_queue: ledger.leftInQueue });
        done();
      }
    } catch (error) {
      if (!context.stopping()) context.settings.logger.warn("could not read queue depth", { reason: describeSqsError(error) });
    }
  }
}

/**
 * Wait for what is in flight to finish until the grace ends, saying what it waits for;
 * then abandon it (calls aborted, connections closed, so open transactions roll back) and
 * give it a moment to unwind. What is left is released by `releaseAll`.
 */
async function finishInFlight(
  settings: ConsumerSettings,
  ledger: Ledger,
  work: ReadonlySet<Promise<void>>,
  stop: StopState,
  abandoning: AbortController,
): Promise<void> {
  const settled = (async () => {
    while (work.size > 0) await Promise.all([...work]);
  })();
  if (work.size === 0) return;
  const progress = setInterval(() =>
    settings.logger.info("stopping: still waiting", {
      in_flight: ledger.size, seconds_left: Math.max(0, Math.round((stop.deadline - Date.now()) / 1000)),
    }), STOP_PROGRESS_MS);
  try {
    await waitAtMost(settled, stop.deadline - Date.now());
  } finally {
    clearInterval(progress);
  }
  if (work.size === 0) return;
  settings.logger.warn("stop grace over: abandoning what is in flight", { in_flight: ledger.size });
  abandoning.abort();
  await waitAtMost(settled, ABANDON_WAIT_MS);
}

/**
 * At the end of a run: hand back what is in flight, and what was left for the redrive
 * policy. A long poll aborted by the stop lives on in SQS until its wait ends, and SQS
 * gives it the next visible message, which nobody then reads: a message released at once
 * would go there and stay invisible for a whole timeout. So it becomes visible when
 * the last of those polls has ended; after a full grace (polls wait no longer) that is now.
 */
async function releaseAll(ledger: Ledger, acknowledge: Acknowledger, receiver: Receiver, settings: ConsumerSettings): Promise<void> {
  const entries = ledger.entries();
  // A receipt of a message left in the queue may be stale by now (received again since): harmless.
  const left = ledger.takeLeftInQueue().map((receiptHandle) => ({ receiptHandle }) as InFlight);
  if (entries.length === 0 && left.length === 0) return;
  // A second more than they may live: a poll that ends takes what is visible at that moment.
  const endsAt = receiver.abortedPollsEndAt;
  const visibleIn = endsAt > Date.now() ? Math.ceil((endsAt - Date.now()) / 1000) + 1 : 0;
  if (entries.length > 0) settings.logger.warn("releasing unfinished messages to the queue", { count: entries.length, visible_in_s: visibleIn });
  await acknowledge.release([...entries, ...left], RELEASE_DEADLINE_MS, visibleIn);
}
