/**
 * Acknowledging: delete what committed, dead-letter what can never load (or leave it to the
 * queue's redrive policy when the DLQ cannot take it), keep slow work invisible with a
 * heartbeat at the queue's own timeout, and hand back what cannot finish.
 *
 * @module
 */
import {
  ChangeMessageVisibilityBatchCommand, DeleteMessageBatchCommand, SendMessageBatchCommand,
} from "@aws-sdk/client-sqs";
import { chunkByBytes, type DeadLetterEntry, fitDeadLetterEntry } from "../dead-letter.ts";
import { FatalError } from "../errors.ts";
import {
  boundedSqsCall, describeSqsError, isTransientSqsError, SQS_CALL_DEADLINE_MS, SQS_MAX_BATCH, type SqsCallOptions,
} from "../sqs.ts";
import { sleep } from "../timing.ts";
import type { ConsumerContext } from "./context.ts";
import type { InFlight } from "./ledger.ts";
import { backoffDelay, retrying } from "./retry.ts";

/** A delete is tried this many times; a message not deleted by then comes back and finds its id processed. */
const DELETE_ATTEMPTS = 5;

/** An invalid message and why it can never be loaded. */
export interface Refused {
  entry: InFlight;
  reason: string;
}

export interface Acknowledger {
  /** Delete messages whose rows are committed. */
  delete(entries: readonly InFlight[]): Promise<void>;
  /** Send invalid messages to the DLQ with their reason, then delete them. */
  deadLetter(items: readonly Refused[]): Promise<void>;
  /** Extend the visibility of what has waited half the queue's timeout. */
  heartbeat(): Promise<void>;
  /** Make messages visible again in `seconds` (not after their timeout), and stop holding them. */
  release(entries: readonly InFlight[], deadlineMs: number, seconds?: number): Promise<void>;
}

function chunk<T>(items: readonly T[], size: number): T[][] {
  const chunks: T[][] = [];
  for (let i = 0; i < items.length; i += size) chunks.push(items.slice(i, i + size));
  return chunks;
}

export function createAcknowledger(context: ConsumerContext): Acknowledger {
  const { settings, stats, ledger } = context;
  const { sqs, queueUrl, dlqUrl, dlqMaxMessageBytes, visibilityTimeoutSeconds, logger } = settings;

  /** An SQS call until it succeeds, waiting out transient faults; undefined if abandoned at a stop. */
  function withSqsRetry<T>(what: string, call: (options: SqsCallOptions) => Promise<T>): Promise<T | undefined> {
    return retrying(context, {
      service: "sqs",
      message: `SQS ${what} failed, retrying`,
      isTransient: isTransientSqsError,
      describe: describeSqsError,
      fatal: (error) => new FatalError(`SQS ${what} failed: ${describeSqsError(error)}`),
      signal: context.abandoning,
    }, () => boundedSqsCall(call, SQS_CALL_DEADLINE_MS, context.abandoning));
  }

  async function deleteGroup(group: readonly InFlight[]): Promise<InFlight[] | undefined> {
    const deleted: InFlight[] = [];
    let remaining = group;
    for (let attempt = 0; remaining.length > 0 && attempt < DELETE_ATTEMPTS; attempt++) {
      const result = await withSqsRetry("delete", (options) =>
        sqs.send(new DeleteMessageBatchCommand({
          QueueUrl: queueUrl,
          Entries: remaining.map((entry, i) => ({ Id: String(i), ReceiptHandle: entry.receiptHandle })),
        }), options));
      // Abandoned at a stop: left in flight, so that the stop releases it.
      if (!result) return deleted;
      const failed = result.Failed ?? [];
      // A stale handle means the message was received again elsewhere; that delivery
      // finds its id already processed and deletes it then. Other failures: try again.
      for (const f of failed) {
        logger.warn("SQS did not delete a message", {
          message_id: remaining[Number(f.Id)]?.message.MessageId, code: f.Code, sender_fault: f.SenderFault,
        });
      }
      const failedIds = new Set(failed.map((f) => f.Id));
      deleted.push(...remaining.filter((_, i) => !failedIds.has(String(i))));
      remaining = failed.filter((f) => f.Code !== "ReceiptHandleIsInvalid").map((f) => remaining[Number(f.Id)]!);
      if (remaining.length > 0) await sleep(backoffDelay(attempt), context.abandoning);
    }
    // Given up after every try, or a stale handle: it comes back and finds its id processed.
    deleted.push(...remaining);
    return deleted;
  }

  async function deleteMessages(entries: readonly InFlight[]): Promise<void> {
    const groups = await Promise.all(chunk(entries, SQS_MAX_BATCH).map(deleteGroup));
    ledger.settle(groups.flatMap((deleted) => deleted ?? []));
  }

  /** Leave an invalid message in the queue for its redrive policy: counted once, held no longer. */
  function leaveInQueue(entry: InFlight): void {
    if (ledger.leaveInQueue(entry)) stats.leftInQueue++;
  }

  /** What can go to the DLQ, with its entry; what cannot is left in the queue. */
  function fitting(items: readonly Refused[]): Array<{ item: Refused; entry: DeadLetterEntry }> {
    const fit: Array<{ item: Refused; entry: DeadLetterEntry }> = [];
    for (const item of items) {
      const entry = fitDeadLetterEntry(item.entry.message, item.reason, dlqMaxMessageBytes);
      if (entry) {
        fit.push({ item, entry });
        continue;
      }
      leaveInQueue(item.entry);
      logger.warn("invalid message too big for the DLQ left in the queue for its redrive policy", {
        message_id: item.entry.message.MessageId, reason: item.reason, bytes: item.entry.bytes, dlq_limit: dlqMaxMessageBytes,
      });
    }
    return fit;
  }

  /**
   * Send invalid messages to the DLQ with their reason, then delete them from the queue.
   * What cannot go to the DLQ (none set, too big for it, refused by it) is left in the queue
   * for its own redrive policy: counted, not heartbeated, handed back by a stop.
   */
  async function deadLetter(items: readonly Refused[]): Promise<void> {
    if (items.length === 0) return;
    if (!dlqUrl) {
      for (const { entry, reason } of items) {
        leaveInQueue(entry);
        logger.warn("invalid message left in the queue (no --dlq-url)", { message_id: entry.message.MessageId, reason });
      }
      return;
    }
    const sent: InFlight[] = [];
    for (const group of chunkByBytes(fitting(items), (f) => f.entry.bytes)) {
      const result = await withSqsRetry("send to DLQ", (options) =>
        sqs.send(new SendMessageBatchCommand({
          QueueUrl: dlqUrl,
          Entries: group.map(({ entry }, i) => ({ ...entry.entry, Id: String(i) })),
        }), options));
      // Abandoned at a stop: left in flight, so that the stop releases it.
      if (!result) continue;
      for (const ok of result.Successful ?? []) {
        const { item } = group[Number(ok.Id)]!;
        sent.push(item.entry);
        logger.warn("invalid message sent to the DLQ", { message_id: item.entry.message.MessageId, reason: item.reason });
      }
      for (const f of result.Failed ?? []) {
        const { item } = group[Number(f.Id)]!;
        leaveInQueue(item.entry);
        logger.warn("DLQ refused a message; left in the queue for its redrive policy", {
          message_id: item.entry.message.MessageId, code: f.Code,
        });
      }
    }
    stats.deadLettered += sent.length;
    await deleteMessages(sent);
  }

  /** Set the visibility timeout of up to 10 messages; entry ids are their indexes. */
  function changeVisibility(group: ReadonlyArray<{ receiptHandle: string }>, seconds: number, deadlineMs = SQS_CALL_DEADLINE_MS) {
    return boundedSqsCall((options) =>
      sqs.send(new ChangeMessageVisibilityBatchCommand({
        QueueUrl: queueUrl,
        Entries: group.map((e, i) => ({ Id: String(i), ReceiptHandle: e.receiptHandle, VisibilityTimeout: seconds })),
      }), options), deadlineMs);
  }

  /**
   * Keep in-flight messages invisible while they wait, at the queue's own timeout: a message
   * is extended once half its timeout has passed, and the timer ticks every quarter, so the
   * extension lands by three quarters of the timeout at the latest.
   */
  async function heartbeat(): Promise<void> {
    // With a timeout of 0 there is nothing to extend: "extending" to 0 would release.
    if (visibilityTimeoutSeconds <= 0) return;
    const halfTimeoutMs = (visibilityTimeoutSeconds * 1000) / 2;
    const due = ledger.entries().filter((e) => Date.now() - e.extendedAt >= halfTimeoutMs);
    await Promise.all(chunk(due, SQS_MAX_BATCH).map(async (group) => {
      // The new timeout counts from when SQS gets the call, not from its answer: note the
      // earlier time, so the next extension is never late.
      const sentAt = Date.now();
      try {
        const result = await changeVisibility(group, visibilityTimeoutSeconds);
        const failedIds = new Set((result.Failed ?? []).map((f) => f.Id));
        group.forEach((e, i) => {
          if (!failedIds.has(String(i))) e.extendedAt = sentAt;
        });
        logger.debug("extended visibility", { count: group.length - failedIds.size, seconds: visibilityTimeoutSeconds });
        if (failedIds.size > 0) logger.warn("SQS did not extend visibility", { count: failedIds.size });
      } catch (error) {
        logger.warn("SQS visibility extension failed", { reason: describeSqsError(error) });
      }
    }));
  }

  async function release(entries: readonly InFlight[], deadlineMs: number, seconds = 0): Promise<void> {
    const unfinished = entries.filter((e) => ledger.has(e));
    await Promise.all(chunk(entries, SQS_MAX_BATCH).map(async (group) => {
      try {
        const { Failed = [] } = await changeVisibility(group, seconds, deadlineMs);
        // A stale receipt (the message was received again since) needs nothing from us.
        const failed = Failed.filter((f) => f.Code !== "ReceiptHandleIsInvalid");
        if (failed.length > 0) {
          logger.warn("SQS did not release some messages; they return after their visibility timeout", {
            count: failed.length, code: failed[0]!.Code,
          });
        }
      } catch (error) {
        logger.warn("could not release messages; they return after their visibility timeout", { reason: describeSqsError(error) });
      }
    }));
    stats.released += unfinished.length;
    ledger.settle(unfinished);
  }

  return { delete: deleteMessages, deadLetter, heartbeat, release };
}
