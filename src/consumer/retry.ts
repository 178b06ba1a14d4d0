/**
 * The one retry loop: call until it succeeds, waiting out transient faults with jittered
 * exponential backoff; each retry counted, told to the observer and logged with its reason.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import { sleep } from "../timing.ts";
import type { ConsumerObserver, ConsumerStats } from "./options.ts";

const BACKOFF_START_MS = 200;
const BACKOFF_MAX_MS = 5_000;

/** The wait before retry `attempt` (0-based): doubling up to 5 s, each drawn from its upper half. */
export function backoffDelay(attempt: number): number {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** attempt);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/** How `retrying` tells a transient fault from a fatal one, and what it says of each. */
export interface RetryPolicy {
  /** The service called, as logs (`waiting_for`) and metrics name it. */
  service: string;
  /** The warning logged at each retry. */
  message: string;
  /** Fields logged beside the reason and the attempt. */
  fields?: Record<string, number | string>;
  isTransient(error: unknown): boolean;
  /** The reason logged, one line holding no value. */
  describe(error: unknown): string;
  /** What a fault that waiting cannot fix becomes (default: itself). */
  fatal?(error: unknown): Error;
  /** Abandons the loop: no more tries, and the wait between them ends. */
  signal: AbortSignal;
  onTransient?(error: unknown): void;
}

/**
 * Call until it succeeds; transient faults are waited out, others thrown.
 *
 * @returns the call's result, or undefined once `policy.signal` has aborted
 */
export type Retrying = <T>(policy: RetryPolicy, call: () => Promise<T>) => Promise<T | undefined>;

/** The retry loop, counting into `stats.retries` and telling `observer` and `logger` of each retry. */
export function createRetrying(
  stats: Pick<ConsumerStats, "retries">,
  logger: Logger,
  observer: ConsumerObserver,
): Retrying {
  return async (policy, call) => {
    for (let attempt = 0; !policy.signal.aborted; attempt++) {
      try {
        return await call();
      } catch (error) {
        if (policy.signal.aborted) return undefined;
        if (!policy.isTransient(error)) throw policy.fatal?.(error) ?? error;
        policy.onTransient?.(error);
        stats.retries++;
        observer.onRetry?.(policy.service);
        // `waiting_for` says which service the wait is on, for a reader and a log query alike.
        logger.warn(policy.message, {
          waiting_for: policy.service,
          reason: policy.describe(error),
          attempt: attempt + 1,
          ...policy.fields,
        });
        await sleep(backoffDelay(attempt), policy.signal);
      }
    }
    return undefined;
  };
}
