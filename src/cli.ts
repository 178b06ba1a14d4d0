/**
 * The command line: parse, check the queues and the database side by side, consume until
 * drained or stopped, and report. Every failure ends as one line on stderr and an exit
 * code; SIGINT and SIGTERM stop cleanly, a second one exits at once.
 *
 * @module
 */
import process from "node:process";
import { getHeapSpaceStatistics, setFlagsFromString } from "node:v8";
import type { SQSClient } from "@aws-sdk/client-sqs";
import { type DatabasePool, sql } from "slonik";
import { type Config, formatSettingsHelp, parseConfig, VERSION } from "./config.ts";
import type { MaskStrategy } from "./contract.ts";
import { createConsumer } from "./pipeline.ts";
import { backoffDelay } from "./consumer/retry.ts";
import { MAX_PARALLEL_WRITES } from "./consumer/batches.ts";
import { SUBCOMMANDS } from "./commands/registry.ts";
import { createDatabasePool } from "./database.ts";
import {
  ConfigError,
  describeDatabaseError,
  EXIT_FAILURE,
  EXIT_SECOND_SIGNAL,
  EXIT_USAGE,
  redactUrl,
} from "./errors.ts";
import { createReadinessChecks, type MetricsServer, startMetricsServer } from "./health.ts";
import { createLogger, type Logger } from "./log.ts";
import { ensureMaskRecord, refuseAnotherStrategy, reportMaskCheck } from "./mask-record.ts";
import { loadStrategy } from "./masking.ts";
import { classifyDatabaseError, describeStartupError } from "./postgres-errors.ts";
import { createBatchSummary, createProgressLine, formatSummary, type ProgressLine } from "./progress.ts";
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

export const HELP = `Usage: sqs-login-masker [options]            consume
       sqs-login-masker COMMAND [options]    an operator's command (below)
       (from a checkout: npx tsx mod.ts …, node mod.ts …, or deno task consume …)

Consume login events from SQS, mask ip and device_id, load them into Postgres (user_logins).

Commands (each with --help):
${Object.entries(SUBCOMMANDS).map(([name, { summary }]) => `  ${name.padEnd(18)} ${summary}`).join("\n")}

Options (flags > environment > --env-file > defaults):
${formatSettingsHelp()}
  --env-file PATH        read variables from PATH (KEY=value lines, as .env.example);
                         the environment wins over it; every command takes it
  --version              print the version
  -h, --help             show this help

Strategies:
  hmac     HMAC-SHA-256 under MASK_HMAC_KEY (at least 32 bytes). Recommended.
  sha256   plain SHA-256 hex, identical to Python's hashlib.sha256(v.encode()).hexdigest(),
           kept only to stay joinable with data masked by the old Python tool. It is WEAK:
           an unsalted hash of an IPv4 address is reversed by hashing all 2^32 addresses,
           about an hour on one core.
  vault    deterministic token in the row (VAULT_TOKEN_KEY); the original sealed to
           VAULT_RECOVERY_PUBLIC_KEY in a vault table, recoverable with the recover
           command by the role holding the private key. Keys: vault-keygen; roles,
           rotation, erasure: docs/vault.md
  ipcrypt  ip encrypted with ipcrypt-deterministic (AES-128) under MASK_IPCRYPT_KEY
           (16 bytes, hex): still an address (IPv6), nothing about its network kept.
  ipcrypt-pfx
           ip encrypted prefix-preserving under MASK_IPCRYPT_KEY (32 bytes, hex, halves
           differ): IPv4 stays IPv4, and addresses sharing a /24 (any prefix) share it
           masked, so they are linkable at /24 by design.
           Both: device_id as hmac (MASK_HMAC_KEY); whoever holds MASK_IPCRYPT_KEY can
           decrypt every ip with the ipcrypt decrypt command.
  An ip is masked in one canonical text: IPv6 as RFC 5952 writes it, an IPv4-mapped
  address as its IPv4 address.
  One table, one mask: the first run records the strategy and a fingerprint of its key
  beside user_logins (user_logins_mask); a run with another strategy or key is refused
  before it loads anything. A new key gets a table of its own (README.md).

AWS region, credentials and endpoint come from the SDK's default chain
(AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL for LocalStack or an emulator).

Exit codes: 0 done or stopped cleanly, 1 runtime failure, 2 usage or configuration error,
130 a second SIGINT/SIGTERM during a stop (exits at once; what was in flight comes back
after its visibility timeout).
`;

/** Closing the pool at exit, at most: a half-open connection never says goodbye. */
const CLEANUP_WAIT_MS = 1_000;

// Shared with the subcommands, which must not import the command line.
export { describeStartupError };

/** Young-generation size at which the command line stops V8 from growing it further. */
const YOUNG_GENERATION_CAP_BYTES = 16 * 1024 * 1024;
/** Old-generation growth between full collections, in percent of what survived the last. */
const OLD_GENERATION_GROWTH_PERCENT = 25;

/**
 * Keep V8's heap near what is live: V8 sizes it by the machine's memory, and a steady
 * stream of short-lived receive buffers otherwise grows it far past what is live
 * (docs/benchmark.md has the figures). Heap sizes cannot be set once the runtime runs, but
 * growth can. Only the command line does this: a library user's process keeps its own.
 */
function boundHeap(): void {
  try {
    setFlagsFromString(`--heap-growing-percent=${OLD_GENERATION_GROWTH_PERCENT}`);
  } catch {
    return; // a runtime whose node:v8 lacks these keeps its own sizing; memory is not correctness
  }
  if (capYoungGeneration()) return;
  const timer = setInterval(() => capYoungGeneration() && clearInterval(timer), 20);
  timer.unref();
}

/** Stop the young generation growing once it has reached the cap; true once done (or impossible). */
function capYoungGeneration(): boolean {
  try {
    const young = getHeapSpaceStatistics().find((space) => space.space_name === "new_space");
    if (young && young.space_size < YOUNG_GENERATION_CAP_BYTES) return false;
    setFlagsFromString("--semi-space-growth-factor=1");
  } catch {
    // As above: keep the runtime's own sizing.
  }
  return true;
}

/** The log and the drain progress line share stderr: the line is cleared before each log line. */
interface Terminal {
  logger: Logger;
  showProgress(line: ProgressLine): void;
  stopProgress(): void;
}

function createTerminal(config: Config): Terminal {
  let progress: ProgressLine | undefined;
  const logger = createLogger({
    level: config.logLevel,
    pretty: (config.logFormat ?? (process.stderr.isTTY === true ? "pretty" : "json")) === "pretty",
    write(line) {
      progress?.clear();
      process.stderr.write(line + "\n");
    },
  });
  return {
    logger,
    showProgress: (line) => (progress = line),
    stopProgress: () => progress?.stop(),
  };
}

/**
 * The bare command: parse, consume, report. Writes to stdout and stderr and handles SIGINT
 * and SIGTERM.
 *
 * @param argv the arguments after the program name
 * @param env the environment
 * @returns the exit code: 0 done, 1 runtime failure, 2 usage or configuration error
 */
export async function consumeCommand(
  argv: readonly string[],
  env: Record<string, string | undefined>,
): Promise<number> {
  // First: the young generation grows fast while the tool starts, and is capped only once seen.
  boundHeap();
  let config: Config;
  let strategy: MaskStrategy;
  try {
    config = parseConfig(argv, env);
    if (config.help || config.version) {
      process.stdout.write(config.help ? HELP : `sqs-login-masker ${VERSION}\n`);
      return 0;
    }
    strategy = await loadStrategy(config.strategy, { env });
  } catch (error) {
    process.stderr.write(`error: ${(error as Error).message}\n`);
    return EXIT_USAGE;
  }
  const terminal = createTerminal(config);
  const sqs = createSqsClient(terminal.logger);
  const opened: { pool?: DatabasePool } = {};
  try {
    process.stdout.write(formatSummary(await consume(config, strategy, sqs, opened, terminal)) + "\n");
    return 0;
  } catch (error) {
    if (error instanceof StoppedAtStartUp) {
      terminal.logger.info("stopped during start-up: nothing was received");
      return 0;
    }
    process.stderr.write(`error: ${describeStartupError(error, config.databaseUrl)}\n`);
    return error instanceof ConfigError ? EXIT_USAGE : EXIT_FAILURE;
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
class StoppedAtStartUp extends Error {
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
