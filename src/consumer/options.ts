/**
 * What an SQS source is given, what it reports, and its defaults: its public surface,
 * apart from `createSqsSource` itself.
 *
 * @module
 */
import type { SQSClient } from "@aws-sdk/client-sqs";
import { type Logger, SILENT_LOGGER } from "../log.ts";
import { SQS_MAX_BATCH_BYTES } from "../sqs.ts";
import type { BatchHandler } from "./port.ts";

export const DEFAULT_BATCH_SIZE = 500;
export const DEFAULT_CONCURRENCY = 16;
/**
 * How long a stop waits for what is in flight before it abandons it and hands it back.
 * Orchestrators must allow more: compose's `stop_grace_period` and Kubernetes'
 * `terminationGracePeriodSeconds` (both 30 s by default) must exceed it by `STOP_MARGIN_SECONDS`.
 */
export const DEFAULT_STOP_GRACE_SECONDS = 20;
/** After the grace, a stop needs at most this long to abandon its calls, release and exit. */
export const STOP_MARGIN_SECONDS = 5;
/** A batch not committed this long after it was formed is abandoned and its messages released. */
export const DEFAULT_BATCH_DEADLINE_SECONDS = 60;
/**
 * Message bodies held in flight at most, in MiB. A receive of SQS's largest bodies (10 of
 * 1 MiB) passes through several copies on its way in (bytes, text, parsed, checked), so the
 * process's peak is a multiple of this: 16 keeps it under 250 MB with 1 MiB bodies
 * (docs/benchmark.md).
 */
export const DEFAULT_MAX_IN_FLIGHT_MB = 16;

/** Counters the consumer keeps; the summary at the end of a run. */
export interface ConsumerStats {
  received: number;
  loaded: number;
  duplicates: number;
  deadLettered: number;
  /**
   * Invalid messages left in the queue, for its own redrive policy to move: no DLQ is
   * configured, or the message is too big for the DLQ, or the DLQ refused it.
   */
  leftInQueue: number;
  /** Messages handed back to the queue unfinished (visible again at once): at a stop, or past a batch's deadline. */
  released: number;
  retries: number;
  startedAt: number;
  finishedAt?: number;
}

/** How an SQS source receives and stops, whatever handles its batches. */
export interface SourceOptions {
  sqs: SQSClient;
  queueUrl: string;
  dlqUrl?: string | undefined;
  /** The DLQ's `MaximumMessageSize`: an entry that cannot fit is left to the queue's redrive policy. */
  dlqMaxMessageBytes?: number;
  /** Stop when the queue holds nothing, neither visible nor in flight. */
  drain?: boolean;
  batchSize?: number;
  /** Receives in flight at once. */
  concurrency?: number;
  /** Bytes of message bodies held in flight at most; receiving waits while they would exceed it. */
  maxInFlightBytes?: number;
  /**
   * The queue's visibility timeout: every receive asks for it explicitly, and the heartbeat
   * keeps slow work invisible with it. Below 1 s, the consumer's own 30 s, with a warning.
   */
  visibilityTimeoutSeconds?: number;
  /** Long-poll wait per receive. */
  waitTimeSeconds?: number;
  /** How long a stop may wait for in-flight work before abandoning it and releasing it to the queue. */
  shutdownGraceMs?: number;
  /** A batch not committed this long after it was formed is abandoned and its messages released. */
  batchDeadlineMs?: number;
  logger?: Logger;
  /** Told of each batch and retry, for metrics and the per-second summary. */
  observer?: ConsumerObserver;
}

/** An SQS source: where it receives from, and the handler its batches go to. */
export interface SqsSourceOptions<T> extends SourceOptions {
  handler: BatchHandler<T>;
}

/** What one written batch came to, for metrics and logs: counts and time, never data. */
export interface BatchReport {
  /** Messages in the batch, duplicates included. */
  size: number;
  rows: number;
  duplicates: number;
  rejected: number;
  /** From preparing (masking) to commit. */
  ms: number;
}

/** Hooks the consumer calls as it works; each must be cheap and must not throw. */
export interface ConsumerObserver {
  onBatch?(report: BatchReport): void;
  /** `service` is `sqs`, or the handler's (`postgres`). */
  onRetry?(service: string): void;
}

export interface Consumer {
  /** Run until drained or stopped; resolves with the final counters. */
  run(): Promise<ConsumerStats>;
  /**
   * Stop receiving, finish and commit what is in flight within the grace, then abandon what
   * is left and release it to the queue.
   */
  stop(): void;
  readonly stats: ConsumerStats;
  /** Messages received and not yet deleted or released. */
  readonly inFlight: number;
  /** Bytes of the bodies of those messages. */
  readonly inFlightBytes: number;
}

/** The options with every default applied. */
export type SourceSettings = Required<Omit<SourceOptions, "dlqUrl">> & { dlqUrl: string | undefined };

/** The visibility a receive asks for when the queue's is too short to hold anything. */
const OWN_VISIBILITY_SECONDS = 30;

/**
 * The visibility to receive with: the queue's, unless it is under 1 s, when every message
 * would be visible again before its batch commits (each written and dead-lettered over and
 * over, and a drain that never ends).
 */
function ownVisibility(queueSeconds: number | undefined, logger: Logger): number {
  if (queueSeconds === undefined) return OWN_VISIBILITY_SECONDS;
  if (queueSeconds >= 1) return queueSeconds;
  logger.warn(
    "the queue's visibility timeout is too short to hold a message while it is written: receiving with 30 s instead; set the queue's VisibilityTimeout",
    {
      queue_visibility_timeout_s: queueSeconds,
      visibility_timeout_s: OWN_VISIBILITY_SECONDS,
    },
  );
  return OWN_VISIBILITY_SECONDS;
}

/**
 * Apply the defaults.
 *
 * Drain mode short-polls: a 1 s long poll made every run end a second after its last
 * message, which at 100 000 messages is several percent of the run. A long poll waits no
 * longer than a stop's grace (see `releaseAll` in source.ts).
 */
export function resolveOptions(options: SourceOptions): SourceSettings {
  const drain = options.drain ?? false;
  const shutdownGraceMs = options.shutdownGraceMs ?? DEFAULT_STOP_GRACE_SECONDS * 1000;
  return {
    sqs: options.sqs,
    queueUrl: options.queueUrl,
    dlqUrl: options.dlqUrl,
    dlqMaxMessageBytes: options.dlqMaxMessageBytes ?? SQS_MAX_BATCH_BYTES,
    drain,
    batchSize: options.batchSize ?? DEFAULT_BATCH_SIZE,
    concurrency: options.concurrency ?? DEFAULT_CONCURRENCY,
    maxInFlightBytes: options.maxInFlightBytes ?? DEFAULT_MAX_IN_FLIGHT_MB * 1024 * 1024,
    visibilityTimeoutSeconds: ownVisibility(options.visibilityTimeoutSeconds, options.logger ?? SILENT_LOGGER),
    shutdownGraceMs,
    waitTimeSeconds: options.waitTimeSeconds ??
      (drain ? 0 : Math.max(1, Math.min(20, Math.floor(shutdownGraceMs / 1000)))),
    batchDeadlineMs: options.batchDeadlineMs ?? DEFAULT_BATCH_DEADLINE_SECONDS * 1000,
    logger: options.logger ?? SILENT_LOGGER,
    observer: options.observer ?? {},
  };
}
