/**
 * The in-flight ledger: every message received and not yet deleted, dead-lettered or handed
 * back, with the bytes of its body, and the invalid messages left in the queue for its own
 * redrive policy. Whoever waits for room (a receive) is woken when anything leaves it.
 *
 * @module
 */
import type { Message } from "@aws-sdk/client-sqs";

/** A message this consumer holds: received, not yet acknowledged. */
export interface InFlight {
  message: Message;
  receiptHandle: string;
  /** When its visibility was last set (received, or extended by the heartbeat). */
  extendedAt: number;
  /** The body's size, counted against the byte bound. */
  bytes: number;
}

export interface Ledger {
  /** Messages held now. */
  readonly size: number;
  /** Bytes of their bodies. */
  readonly bytes: number;
  /** Every message held now. */
  entries(): InFlight[];
  has(entry: InFlight): boolean;
  /** Hold a received message; undefined if SQS gave no receipt to act on it with. */
  receive(message: Message): InFlight | undefined;
  /** Stop holding these (deleted, dead-lettered, released). */
  settle(entries: readonly InFlight[]): void;
  /** Leave an invalid message in the queue: held no longer, remembered to hand back at a stop. Returns whether it is new. */
  leaveInQueue(entry: InFlight): boolean;
  /** The receipts of the messages left in the queue, forgotten as they are handed out. */
  takeLeftInQueue(): string[];
  /**
   * How many messages left in the queue are still hidden by this consumer's receive. Once
   * visible again, SQS counts them as visible, or its redrive policy has moved them out:
   * either way they are no longer ours to discount.
   */
  readonly leftInQueue: number;
  /** Resolves at the next change that may make room (a settle, or `wake`). */
  changed(): Promise<void>;
  /** Wake everyone waiting in `changed`. */
  wake(): void;
}

/** A message left in the queue is forgotten this long after it became visible (its receipt is stale by then). */
const LEFT_FORGET_AFTER_MS = 60_000;
/** At most this many messages left in the queue are remembered: a long run without a redrive policy stays bounded. */
const LEFT_MAX = 100_000;

/** A message left in the queue: its last receipt, and until when our receive hides it. */
interface Left {
  receiptHandle: string;
  hiddenUntil: number;
}

/** @param visibilityTimeoutMs how long a receive hides a message, which is not heartbeated once left */
export function createLedger(visibilityTimeoutMs: number): Ledger {
  const held = new Map<string, InFlight>();
  let bytes = 0;
  // Ids of invalid messages left in the queue, and the last receipt of each, so that a stop
  // can hand them back; neither heartbeated nor counted in flight. In the order they were
  // left, so the oldest are first to forget.
  const left = new Map<string, Left>();
  // Every receive may be waiting at once: keep all their wake-ups, not the last.
  const waiters = new Set<() => void>();

  function settle(entries: readonly InFlight[]): void {
    for (const entry of entries) {
      if (held.delete(entry.receiptHandle)) bytes -= entry.bytes;
    }
    wake();
  }

  /** Forget what became visible long ago, and the oldest past the cap. */
  function forgetStale(now: number): void {
    for (const [id, entry] of left) {
      if (entry.hiddenUntil + LEFT_FORGET_AFTER_MS > now && left.size <= LEFT_MAX) break;
      left.delete(id);
    }
  }

  function wake(): void {
    for (const resolve of waiters) resolve();
    waiters.clear();
  }

  return {
    get size() {
      return held.size;
    },
    get bytes() {
      return bytes;
    },
    get leftInQueue() {
      const now = Date.now();
      forgetStale(now);
      let hidden = 0;
      for (const entry of left.values()) if (entry.hiddenUntil > now) hidden++;
      return hidden;
    },
    entries: () => [...held.values()],
    has: (entry) => held.has(entry.receiptHandle),
    receive(message) {
      if (!message.ReceiptHandle) return undefined;
      const entry = {
        message,
        receiptHandle: message.ReceiptHandle,
        extendedAt: Date.now(),
        bytes: message.Body?.length ?? 0,
      };
      held.set(entry.receiptHandle, entry);
      bytes += entry.bytes;
      return entry;
    },
    settle,
    leaveInQueue(entry) {
      const id = entry.message.MessageId ?? "";
      const isNew = !left.has(id);
      // Deleted first: set again, it moves to the end, as the newest.
      left.delete(id);
      left.set(id, { receiptHandle: entry.receiptHandle, hiddenUntil: entry.extendedAt + visibilityTimeoutMs });
      forgetStale(Date.now());
      settle([entry]);
      return isNew;
    },
    takeLeftInQueue() {
      const receipts = [...left.values()].map((entry) => entry.receiptHandle);
      left.clear();
      return receipts;
    },
    changed: () => new Promise<void>((resolve) => waiters.add(resolve)),
    wake,
  };
}
