/**
 * Prometheus metrics through prom-client: the tool's counters (read from the consumer's
 * stats at scrape time: one source of truth), its batch histograms and retries (fed by the
 * consumer's observer), and prom-client's default process and runtime metrics beside them.
 * Counts and times only: no label here ever carries a message's content.
 *
 * @module
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { ConsumerObserver, ConsumerStats } from "./consumer/options.ts";

/** Prefix of every metric of the tool's own. */
export const METRIC_PREFIX = "login_masker";
const BATCH_SIZE_BUCKETS = [1, 10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];
const BATCH_SECONDS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** The counters read from `ConsumerStats`, with their help text. */
const STAT_COUNTERS: ReadonlyArray<[name: string, stat: keyof ConsumerStats, help: string]> = [
  ["messages_received_total", "received", "Messages received from the queue, redeliveries included."],
  ["rows_loaded_total", "loaded", "Rows inserted into user_logins."],
  ["duplicates_total", "duplicates", "Messages whose row was already loaded (redeliveries)."],
  ["messages_dead_lettered_total", "deadLettered", "Invalid or refused messages sent to the dead-letter queue."],
  [
    "messages_left_in_queue_total",
    "leftInQueue",
    "Invalid messages left in the queue for its redrive policy: no DLQ set, too big for the DLQ, or refused by it.",
  ],
  [
    "messages_released_total",
    "released",
    "Messages handed back to the queue unfinished: at a stop, or not committed by their batch's deadline.",
  ],
];

/** Metrics fed by the consumer's observer and read from its counters at scrape time. */
export interface Metrics {
  observer: Required<ConsumerObserver>;
  /** The Prometheus text exposition of everything, for `GET /metrics`. */
  render(stats: ConsumerStats, inFlight: number, inFlightBytes?: number): Promise<string>;
  /** The content type of that text. */
  readonly contentType: string;
}

/** Create a registry of the tool's metrics and the process's default ones. */
export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];
  const counters = STAT_COUNTERS.map(([name, stat, help]) => ({
    stat,
    counter: new Counter({ name: `${METRIC_PREFIX}_${name}`, help, registers }),
  }));
  const retries = new Counter({
    name: `${METRIC_PREFIX}_retries_total`,
    help: "Calls retried after a transient fault, by service.",
    labelNames: ["service"],
    registers,
  });
  for (const service of ["sqs", "postgres"]) retries.inc({ service }, 0);
  const inFlightMessages = new Gauge({
    name: `${METRIC_PREFIX}_in_flight_messages`,
    help: "Messages received and not yet deleted or released.",
    registers,
  });
  const inFlightBytesGauge = new Gauge({
    name: `${METRIC_PREFIX}_in_flight_bytes`,
    help: "Bytes of the bodies of the messages in flight (bounded by --max-in-flight-mb).",
    registers,
  });
  const batchSize = new Histogram({
    name: `${METRIC_PREFIX}_batch_size`,
    help: "Messages per written batch.",
    buckets: BATCH_SIZE_BUCKETS,
    registers,
  });
  const batchSeconds = new Histogram({
    name: `${METRIC_PREFIX}_batch_duration_seconds`,
    help: "Time from masking a batch to its commit.",
    buckets: BATCH_SECONDS_BUCKETS,
    registers,
  });
  return {
    observer: {
      onBatch(report) {
        batchSize.observe(report.size);
        batchSeconds.observe(report.ms / 1000);
      },
      onRetry(service) {
        retries.inc({ service });
      },
    },
    async render(stats, inFlight, inFlightBytes = 0) {
      // The stats are the counters' truth: each scrape shows them as they are now.
      for (const { stat, counter } of counters) {
        counter.reset();
        counter.inc(Number(stats[stat] ?? 0));
      }
      inFlightMessages.set(inFlight);
      inFlightBytesGauge.set(inFlightBytes);
      return await registry.metrics();
    },
    contentType: registry.contentType,
  };
}
