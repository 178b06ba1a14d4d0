/**
 * Consuming, wired: the queues and the database checked and set up side by side (start-up
 * waits out a database that is not ready yet), then the consumer, with its metrics server,
 * batch log, drain progress line and signals, and everything closed at the end. The command
 * line (src/cli.ts) parses and reports; this runs.
 *
 * @module
 */
import process from "node:process";
import type { SQSClient } from "@aws-sdk/client-sqs";
import { type DatabasePool, sql } from "slonik";
import type { Config } from "./config.ts";
import type { MaskStrategy } from "./contract.ts";
import { MAX_PARALLEL_WRITES } from "./consumer/batches.ts";
import type { ConsumerStats } from "./consumer/options.ts";
import { backoffDelay } from "./consumer/retry.ts";
import { createDatabasePool } from "./database.ts";
import { describeDatabaseError, EXIT_SECOND_SIGNAL, redactUrl } from "./errors.ts";
import { createReadinessChecks, type MetricsServer, startMetricsServer } from "./health.ts";
import type { Logger } from "./log.ts";
import { ensureMaskRecord, refuseAnotherStrategy, reportMaskCheck } from "./mask-record.ts";
import { createConsumer } from "./pipeline.ts";
import { classifyDatabaseError } from "./postgres-errors.ts";
import { createBatchSummary, createProgressLine, type ProgressLine } from "./progress.ts";
import { ensureSchema } from "./sink.ts";
import {
  createSqsClient,
  inspectQueue,
  NO_REDRIVE_POLICY,
  type QueueInfo,
  queueKindMismatch,
  readQueueDepth,
} from "./sqs.ts";
import { sleep, withTimeout } from "./timing.ts";

/** Closing the pool at exit, at most: a half-open connection never says goodbye. */
const CLEANUP_WAIT_MS = 1_000;

/** The log and the drain progress line share stderr: the line is cleared before each log line. */
export interface Terminal {
  logger: Logger;
  showProgress(line: ProgressLine): void;
  stopProgress(): void;
}

/**
 * Consume until drained or stopped, as the configuration says, and close everything after.
 *
 * @returns the consumer's final counters
 * @throws {StoppedAtStartUp} when a SIGINT or SIGTERM came before consuming began
 */
export async function runConsumer(config: Config, strategy: MaskStrategy, terminal: Terminal): Promise<ConsumerStats> {
  const sqs = createSqsClient(terminal.logger);
  const opened: { pool?: DatabasePool } = {};
  try {
    return await consume(config, strategy, sqs, opened, terminal);
  } finally {
    terminal.stopProgress();
    await withTimeout(opened.pool?.end() ?? Promise.resolve(), CLEANUP_WAIT_MS).catch(() => {});
    sqs.destroy();
  }
}

/**
 * Check the queues and the database side by side (a queue's error is told first), then
 * set up what the strategy keeps and check its mask against the table's. The pool is
 * handed out as soon as it exists, for the caller to close whatever happens next.
 */
async function startServices(
  config: Config,
  strategy: MaskStrategy,
  sqs: SQSClient,
  opened: { pool?: DatabasePool },
  start: StartUp,
) {
  const [queues, database] = await Promise.allSettled([
    (async () => {
      const source = await inspectQueue(sqs, config.queueUrl, "--queue-url");
      const dlq = config.dlqUrl ? await inspectQueue(sqs, config.dlqUrl, "--dlq-url") : undefined;
      return { source, dlq };
    })(),
    (async () => {
      const pool = opened.pool = await createDatabasePool(config.databaseUrl, MAX_PARALLEL_WRITES + 2);
      // The first answer decides whether this is Postgres at all: a wrong URL fails at once.
      await pool.query(sql.unsafe`SELECT 1`);
      // Past it, a fault that passes (a reset, a lock held by another starter or a
      // migration, a failover) is waited out: each step may run again.
      return await untilSettled(start, async () => {
        await ensureSchema(pool);
        await refuseAnotherStrategy(pool, strategy);
        await strategy.setup?.(pool);
        return { pool, mask: await ensureMaskRecord(pool, strategy) };
      });
    })(),
  ]);
  if (queues.status === "rejected") throw queues.reason;
  if (database.status === "rejected") throw database.reason;
  return { ...queues.value, ...database.value };
}

/**
 * Start-up, with SIGINT and SIGTERM handled from its first moment: a stop before consuming
 * begins ends start-up; once the consumer is set in `stop`, it stops the consumer.
 */
async function startWithSignals(
  config: Config,
  strategy: MaskStrategy,
  sqs: SQSClient,
  opened: { pool?: DatabasePool },
  logger: Logger,
) {
  const stopped = new AbortController();
  const stop: { consumer?: () => void } = {};
  stopOnSignals(() => (stop.consumer ? stop.consumer() : stopped.abort()), logger);
  const services = await startServices(config, strategy, sqs, opened, { logger, stopped: stopped.signal });
  if (stopped.signal.aborted) throw new StoppedAtStartUp();
  return { ...services, stop };
}

/** A stop asked for before consuming began. */
export class StoppedAtStartUp extends Error {
  override name = "StoppedAtStartUp";
}

/** What start-up shares: its log, and the signal a SIGINT/SIGTERM before consuming aborts. */
interface StartUp {
  logger: Logger;
  stopped: AbortSignal;
}

/** Run `step` until it succeeds, waiting out transient database faults; a stop ends the wait at once. */
async function untilSettled<T>(start: StartUp, step: () => Promise<T>): Promise<T> {
  const stopped = new Promise<never>((_, reject) => {
    if (start.stopped.aborted) reject(new StoppedAtStartUp());
    start.stopped.addEventListener("abort", () => reject(new StoppedAtStartUp()), { once: true });
  });
  stopped.catch(() => {});
  for (let attempt = 0;; attempt++) {
    try {
      return await Promise.race([step(), stopped]);
    } catch (error) {
      if (error instanceof StoppedAtStartUp || classifyDatabaseError(error) !== "transient") throw error;
      start.logger.warn("Postgres not ready for start-up, retrying", {
        waiting_for: "postgres",
        reason: describeDatabaseError(error),
        attempt: attempt + 1,
      });
      await Promise.race([sleep(backoffDelay(attempt), start.stopped), stopped]);
    }
  }
}

function warnWithoutRedrivePolicy(queue: QueueInfo, config: Config, logger: Logger): void {
  const mismatch = config.dlqUrl ? queueKindMismatch(config.queueUrl, config.dlqUrl) : undefined;
  if (mismatch) logger.warn(mismatch, { queue: redactUrl(config.queueUrl), dlq: redactUrl(config.dlqUrl!) });
  if (queue.redrivePolicy) return;
  logger.warn(NO_REDRIVE_POLICY, { queue: redactUrl(config.queueUrl) });
}

/** Consume until drained or stopped, with the metrics server and the batch log beside it. */
async function consume(
  config: Config,
  strategy: MaskStrategy,
  sqs: SQSClient,
  opened: { pool?: DatabasePool },
  terminal: Terminal,
) {
  const { logger } = terminal;
  const { source, dlq, pool, mask, stop } = await startWithSignals(config, strategy, sqs, opened, logger);
  reportMaskCheck(mask, strategy, logger);
  warnWithoutRedrivePolicy(source, config, logger);
  if (strategy.caution) logger.warn(strategy.caution, { strategy: strategy.name });
  // prom-client is loaded only when metrics are served: it costs ~10 MB of a run's memory.
  const metrics = config.metricsPort === undefined ? undefined : (await import("./metrics.ts")).createMetrics();
  const batchSummary = createBatchSummary(logger);
  const consumer = createConsumer({
    sqs,
    pool,
    strategy,
    logger,
    observer: {
      onBatch(report) {
        metrics?.observer.onBatch(report);
        batchSummary.onBatch(report);
      },
      onRetry: (service) => metrics?.observer.onRetry(service),
    },
    queueUrl: config.queueUrl,
    dlqUrl: config.dlqUrl,
    dlqMaxMessageBytes: dlq?.maximumMessageSize,
    drain: config.drain,
    batchSize: config.batchSize,
    concurrency: config.concurrency,
    maxInFlightBytes: config.maxInFlightMb * 1024 * 1024,
    visibilityTimeoutSeconds: source.visibilityTimeoutSeconds,
    shutdownGraceMs: config.stopGraceSeconds * 1000,
    batchDeadlineMs: config.batchDeadlineSeconds * 1000,
  });
  stop.consumer = consumer.stop;
  let server: MetricsServer | undefined;
  try {
    if (metrics && config.metricsPort !== undefined) {
      const render = () => metrics.render(consumer.stats, consumer.inFlight, consumer.inFlightBytes);
      server = await startMetricsServer(
        config.metricsPort,
        { render, contentType: metrics.contentType },
        createReadinessChecks(pool, sqs, config.queueUrl),
        config.metricsHost,
      );
    }
    logger.info("consuming", {
      queue: redactUrl(config.queueUrl),
      dlq: config.dlqUrl ? redactUrl(config.dlqUrl) : "none",
      strategy: strategy.name,
      drain: config.drain,
      batch_size: config.batchSize,
      concurrency: config.concurrency,
      max_in_flight_mb: config.maxInFlightMb,
      stop_grace_s: config.stopGraceSeconds,
      metrics_port: server?.port,
    });
    if (config.drain && process.stderr.isTTY === true) {
      terminal.showProgress(
        createProgressLine(
          consumer.stats,
          async () => (await readQueueDepth(sqs, config.queueUrl)).visible,
          (text) => process.stderr.write(text),
        ),
      );
    }
    const stats = await consumer.run();
    terminal.stopProgress();
    return stats;
  } finally {
    batchSummary.stop();
    await server?.close();
  }
}

/**
 * The first SIGINT or SIGTERM stops cleanly; a second exits at once (code 130). Kept until
 * the process ends: a signal during the last clean-up is a second one, not a kill.
 */
function stopOnSignals(stop: () => void, logger: Logger): void {
  let signals = 0;
  const onSignal = (signal: string) => {
    if (++signals === 1) {
      logger.info("stop requested; a second signal exits at once (code 130)", { signal });
      stop();
      return;
    }
    // Nothing is lost: unacknowledged messages return to the queue after their timeout.
    logger.warn("second signal: exiting now", { signal });
    process.exit(EXIT_SECOND_SIGNAL);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
}
