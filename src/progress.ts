/**
 * What a person watching sees: one info line per second summarising the batches written,
 * the live drain progress on one terminal line, and the run's one-line summary.
 *
 * @module
 */
import type { BatchReport, ConsumerStats } from "./consumer/options.ts";
import type { Logger } from "./log.ts";

/** How often the batch summary is logged, at most. */
export const SUMMARY_INTERVAL_MS = 1_000;

/** The batch log of `createBatchSummary`. */
export interface BatchSummary {
  onBatch(report: BatchReport): void;
  /** Log what is pending now. */
  flush(): void;
  /** Stop the interval and log what is pending. */
  stop(): void;
}

/**
 * Log batches at info as one line per interval rather than one per batch: at a few
 * thousand messages a second, batches of tens would make a hundred lines a second, more log
 * than data; a quiet interval logs nothing. Each batch is still logged at debug.
 *
 * @returns the observer hook and `flush` (log what is pending now, e.g. at exit)
 */
export function createBatchSummary(logger: Logger, intervalMs = SUMMARY_INTERVAL_MS): BatchSummary {
  const empty = () => ({ batches: 0, rows: 0, duplicates: 0, rejected: 0, totalMs: 0, maxMs: 0 });
  let pending = empty();
  const flush = () => {
    if (pending.batches === 0) return;
    const { batches, rows, duplicates, rejected, totalMs, maxMs } = pending;
    pending = empty();
    logger.info("batches written", {
      batches,
      rows,
      duplicates,
      rejected,
      ms_avg: Math.round(totalMs / batches),
      ms_max: maxMs,
    });
  };
  // Not unref'd: Deno's timers are numbers; `stop()` ends it, as main does in its finally.
  const timer = setInterval(flush, intervalMs);
  return {
    onBatch(report: BatchReport) {
      pending.batches++;
      pending.rows += report.rows;
      pending.duplicates += report.duplicates;
      pending.rejected += report.rejected;
      pending.totalMs += report.ms;
      pending.maxMs = Math.max(pending.maxMs, report.ms);
    },
    flush,
    stop() {
      clearInterval(timer);
      flush();
    },
  };
}

/** The numbers the drain progress line shows. */
export interface Progress {
  loaded: number;
  deadLettered: number;
  /** Rows per second over the last sample. */
  rate: number;
  /** The queue's ApproximateNumberOfMessages, or undefined before the first answer. */
  remaining: number | undefined;
}

/** The live line of `createProgressLine`. */
export interface ProgressLine {
  /** Erase the line before something else is written to the terminal. */
  clear(): void;
  stop(): void;
}

/** One progress line, e.g. `loaded 1,200  dead-lettered 3  850/s  ~4,000 left`. */
export function formatProgress(p: Progress): string {
  const n = (value: number) => Math.round(value).toLocaleString("en-US");
  return `loaded ${n(p.loaded)}  dead-lettered ${n(p.deadLettered)}  ${n(p.rate)}/s  ` +
    (p.remaining === undefined ? "~? left" : `~${n(p.remaining)} left`);
}

/**
 * Live progress on one terminal line, redrawn in place; `clear` before anything else is
 * written to the same terminal, and the line comes back at the next tick.
 */
export function createProgressLine(
  stats: ConsumerStats,
  remaining: () => Promise<number>,
  write: (text: string) => void,
  everyMs = 250,
): ProgressLine {
  let shown = false;
  let last = { at: Date.now(), loaded: 0 };
  const progress: Progress = { loaded: 0, deadLettered: 0, rate: 0, remaining: undefined };
  const sample = setInterval(() => {
    const now = Date.now();
    progress.rate = ((stats.loaded - last.loaded) * 1000) / Math.max(1, now - last.at);
    last = { at: now, loaded: stats.loaded };
    remaining().then((count) => (progress.remaining = count), () => {});
  }, 1_000);
  const draw = setInterval(() => {
    progress.loaded = stats.loaded;
    progress.deadLettered = stats.deadLettered;
    write(`\r\x1b[2K${formatProgress(progress)}`);
    shown = true;
  }, everyMs);
  const clear = () => {
    if (shown) write("\r\x1b[2K");
    shown = false;
  };
  return {
    clear,
    stop() {
      clearInterval(sample);
      clearInterval(draw);
      clear();
    },
  };
}

/** Print the one-line summary of a run to stdout. */
export function formatSummary(stats: ConsumerStats): string {
  const seconds = ((stats.finishedAt ?? Date.now()) - stats.startedAt) / 1000;
  const rate = seconds > 0 ? Math.round(stats.loaded / seconds) : 0;
  return `loaded=${stats.loaded} duplicates=${stats.duplicates} dead_lettered=${stats.deadLettered} ` +
    `left_in_queue=${stats.leftInQueue} released=${stats.released} retries=${stats.retries} seconds=${
      seconds.toFixed(2)
    } rate=${rate}/s`;
}
