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
  /** How many messages are left in the queue. */
  readonly leftInQueue: number;
  /** Resolves at the next change that may make room (a settle, or `wake`). */
  changed(): Promise<void>;
  /** Wake everyone waiting in `changed`. */
  wake(): void;
}

export function createLedger(): Ledger {
  const held = new Map<string, InFlight>();
  let bytes = 0;
  // Ids of invalid messages left in the queue, and the last receipt of each, so that a stop
  // can hand them back; neither heartbeated nor counted in flight.
  const left = new Map<string, string>();
  // Every receive may be waiting at once: keep all their wake-ups, not the last.
  const waiters = new Set<() => void>();

  function settle(entries: readonly InFlight[]): void {
    for (const entry of entries) {
      if (held.delete(entry.receiptHandle)) bytes -= entry.bytes;
    }
    wake();
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
      return left.size;
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
      left.set(id, entry.receiptHandle);
      settle([entry]);
      return isNew;
    },
    takeLeftInQueue() {
      const receipts = [...left.values()];
      left.clear();
      return receipts;
    },
    changed: () => new Promise<void>((resolve) => waiters.add(resolve)),
    wake,
  };
}
