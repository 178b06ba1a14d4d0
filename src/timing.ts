/**
 * Waiting, bounded: sleeps a signal can cut short, waits with a ceiling, and deadlines
 * that abort. Every timer made here is cleared when its wait ends, so none holds the
 * process open after a run. A leaf: it imports no file of the project.
 *
 * @module
 */

/** Wait `ms` (none if it is negative: a deadline already past), or less if `signal` aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    // Node warns of a negative delay (TimeoutNegativeWarning) on stderr, then waits 1 ms anyway.
    const timer = setTimeout(done, Math.max(0, ms));
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** Wait for `promise`, or `ms` at most; no timer is left behind either way. */
export async function waitAtMost(promise: Promise<unknown>, ms: number): Promise<void> {
  const done = new AbortController();
  await Promise.race([promise, sleep(ms, done.signal)]);
  done.abort();
}

/** `promise`, or the error `onTimeout` makes if it has not settled within `ms`. */
export function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  onTimeout: () => Error = () => new Error(`no answer within ${ms} ms`),
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A signal that aborts at a deadline, or sooner with another. */
export interface Deadline {
  readonly signal: AbortSignal;
  /** Whether the time ran out (rather than the outer signal aborting). */
  expired(): boolean;
  /** End the timer and stop listening to the outer signal. */
  clear(): void;
}

/** A signal that aborts after `ms`, or when `outer` aborts, whichever comes first. */
export function deadlineSignal(ms: number, outer?: AbortSignal): Deadline {
  const controller = new AbortController();
  let expired = false;
  const timer = setTimeout(() => {
    expired = true;
    controller.abort();
  }, ms);
  const onOuterAbort = () => controller.abort(outer!.reason);
  if (outer?.aborted) onOuterAbort();
  else outer?.addEventListener("abort", onOuterAbort, { once: true });
  return {
    signal: controller.signal,
    expired: () => expired,
    clear() {
      clearTimeout(timer);
      outer?.removeEventListener("abort", onOuterAbort);
    },
  };
}
