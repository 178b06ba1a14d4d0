/**
 * Acknowledging: delete what committed, dead-letter what can never load (or leave it to the
 * queue's redrive policy when the DLQ cannot take it), keep slow work invisible with a
 * heartbeat at the queue's own timeout, and hand back what cannot finish.
 *
 * @module
 */
import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  SendMessageBatchCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import { chunk, chunkByBytes, type DeadLetterEntry, fitDeadLetterEntry } from "../dead-letter.ts";
import { FatalError } from "../errors.ts";
import {
  boundedSqsCall,
  describeSqsError,
  isFifoQueue,
  isTransientSqsError,
  SQS_CALL_DEADLINE_MS,
  SQS_MAX_BATCH,
  type SqsCallOptions,
} from "../sqs.ts";
import type { Logger } from "../log.ts";
import { sleep } from "../timing.ts";
import type { InFlight, Ledger } from "./ledger.ts";
import type { ConsumerStats } from "./options.ts";
import { backoffDelay, type Retrying } from "./retry.ts";

/** A delete is tried this many times; a message not deleted by then comes back and finds its id processed. */
const DELETE_ATTEMPTS = 5;

/** An invalid message and why it can never be loaded. */
export interface Refused {
  entry: InFlight;
  reason: string;
}

/** What acknowledging reads: the queues, the ledger, the counters it keeps, and the stop's last signal. */
export interface AcknowledgerDeps {
  sqs: SQSClient;
  queueUrl: string;
  dlqUrl: string | undefined;
  /** The DLQ's `MaximumMessageSize`: an entry that cannot fit is left to the queue's redrive policy. */
  dlqMaxMessageBytes: number;
  visibilityTimeoutSeconds: number;
  ledger: Ledger;
  stats: Pick<ConsumerStats, "deadLettered" | "leftInQueue" | "released">;
  logger: Logger;
  retrying: Retrying;
  /** Aborted when a stop's grace ends: SQS calls still going are abandoned. */
  abandoning: AbortSignal;
}

export interface Acknowledger {
  /** Delete messages whose rows are committed, ten to a call, and stop holding them. */
  deleteMessages(entries: readonly InFlight[]): Promise<void>;
  /** Send invalid messages to the DLQ with their reason, then delete them from the queue. */
  deadLetter(items: readonly Refused[]): Promise<void>;
  /** Keep in-flight messages invisible while they wait. */
  heartbeat(): Promise<void>;
  /** Make messages visible again in `seconds` (not after their timeout), and stop holding them. */
  release(entries: readonly InFlight[], deadlineMs: number, seconds?: number): Promise<void>;
}

export function createAcknowledger(deps: AcknowledgerDeps): Acknowledger {
  return {
    deleteMessages: (entries) => deleteMessages(deps, entries),
    deadLetter: (items) => deadLetter(deps, items),
    heartbeat: () => heartbeat(deps),
    release: (entries, deadlineMs, seconds) => release(deps, entries, deadlineMs, seconds),
  };
}

/** An SQS call until it succeeds, waiting out transient faults; undefined if abandoned at a stop. */
function withSqsRetry<T>(
  deps: AcknowledgerDeps,
  what: string,
  call: (options: SqsCallOptions) => Promise<T>,
): Promise<T | undefined> {
  return deps.retrying({
    service: "sqs",
    message: `SQS ${what} failed, retrying`,
    isTransient: isTransientSqsError,
    describe: describeSqsError,
    fatal: (error) => new FatalError(`SQS ${what} failed: ${describeSqsError(error)}`),
    signal: deps.abandoning,
  }, () => boundedSqsCall(call, SQS_CALL_DEADLINE_MS, deps.abandoning));
}

/** Delete messages whose rows are committed, ten to a call, and stop holding them. */
async function deleteMessages(deps: AcknowledgerDeps, entries: readonly InFlight[]): Promise<void> {
  const groups = await Promise.all(chunk(entries, SQS_MAX_BATCH).map((group) => deleteGroup(deps, group)));
  deps.ledger.settle(groups.flat());
}

/** Delete up to ten, trying again what failed; returns what needs holding no longer. */
async function deleteGroup(deps: AcknowledgerDeps, group: readonly InFlight[]): Promise<InFlight[]> {
  const { sqs, queueUrl, logger } = deps;
  const done: InFlight[] = [];
  let remaining = group;
  for (let attempt = 0; remaining.length > 0 && attempt < DELETE_ATTEMPTS; attempt++) {
    const entries = remaining.map((entry, i) => ({ Id: String(i), ReceiptHandle: entry.receiptHandle }));
    const result = await withSqsRetry(
      deps,
      "delete",
      (options) => sqs.send(new DeleteMessageBatchCommand({ QueueUrl: queueUrl, Entries: entries }), options),
    );
    // Abandoned at a stop: left in flight, so that the stop releases it.
    if (!result) return done;
    const failed = new Map((result.Failed ?? []).map((f) => [f.Id, f]));
    const retry: InFlight[] = [];
    remaining.forEach((entry, i) => {
      const failure = failed.get(String(i));
      if (failure) {
        logger.warn("SQS did not delete a message", {
          message_id: entry.message.MessageId,
          code: failure.Code,
          sender_fault: failure.SenderFault,
        });
      }
      // A stale handle means the message was received again elsewhere; that delivery finds
      // its id already processed and deletes it then: this one is done with it.
      if (failure && failure.Code !== "ReceiptHandleIsInvalid") retry.push(entry);
      else done.push(entry);
    });
    remaining = retry;
    if (remaining.length > 0) await sleep(backoffDelay(attempt), deps.abandoning);
  }
  // Given up after every try: it comes back and finds its id processed.
  return [...done, ...remaining];
}

/** Leave an invalid message in the queue for its redrive policy: counted once, held no longer. */
function leaveInQueue(deps: AcknowledgerDeps, entry: InFlight): void {
  if (deps.ledger.leaveInQueue(entry)) deps.stats.leftInQueue++;
}

/**
 * Send invalid messages to the DLQ with their reason, then delete them from the queue.
 * What cannot go to the DLQ (none set, too big for it, refused by it) is left in the queue
 * for its own redrive policy: counted, not heartbeated, handed back by a stop.
 */
async function deadLetter(deps: AcknowledgerDeps, items: readonly Refused[]): Promise<void> {
  const { dlqUrl, logger } = deps;
  if (items.length === 0) return;
  if (!dlqUrl) {
    for (const { entry, reason } of items) {
      leaveInQueue(deps, entry);
      logger.warn("invalid message left in the queue (no --dlq-url)", { message_id: entry.message.MessageId, reason });
    }
    return;
  }
  const sent: InFlight[] = [];
  for (const group of chunkByBytes(fitting(deps, items), (f) => f.entry.bytes)) {
    sent.push(...await sendToDeadLetterQueue(deps, dlqUrl, group));
  }
  deps.stats.deadLettered += sent.length;
  await deleteMessages(deps, sent);
}

/** What can go to the DLQ, with its entry; what cannot is left in the queue. */
function fitting(
  deps: AcknowledgerDeps,
  items: readonly Refused[],
): Array<{ item: Refused; entry: DeadLetterEntry }> {
  const { dlqMaxMessageBytes, dlqUrl, logger } = deps;
  const fit: Array<{ item: Refused; entry: DeadLetterEntry }> = [];
  for (const item of items) {
    const entry = fitDeadLetterEntry(item.entry.message, item.reason, dlqMaxMessageBytes, isFifoQueue(dlqUrl!));
    if (entry) {
      fit.push({ item, entry });
      continue;
    }
    leaveInQueue(deps, item.entry);
    logger.warn("invalid message too big for the DLQ left in the queue for its redrive policy", {
      message_id: item.entry.message.MessageId,
      reason: item.reason,
      bytes: item.entry.bytes,
      dlq_limit: dlqMaxMessageBytes,
    });
  }
  return fit;
}

/** One SendMessageBatch to the DLQ; returns what it took. What it refused is left in the queue. */
async function sendToDeadLetterQueue(
  deps: AcknowledgerDeps,
  dlqUrl: string,
  group: ReadonlyArray<{ item: Refused; entry: DeadLetterEntry }>,
): Promise<InFlight[]> {
  const { sqs, logger } = deps;
  const result = await withSqsRetry(deps, "send to DLQ", (options) =>
    sqs.send(
      new SendMessageBatchCommand({
        QueueUrl: dlqUrl,
        Entries: group.map(({ entry }, i) => ({ ...entry.entry, Id: String(i) })),
      }),
      options,
    ));
  // Abandoned at a stop: left in flight, so that the stop releases it.
  if (!result) return [];
  const sent: InFlight[] = [];
  for (const ok of result.Successful ?? []) {
    const { item } = group[Number(ok.Id)]!;
    sent.push(item.entry);
    logger.warn("invalid message sent to the DLQ", { message_id: item.entry.message.MessageId, reason: item.reason });
  }
  for (const f of result.Failed ?? []) {
    const { item } = group[Number(f.Id)]!;
    leaveInQueue(deps, item.entry);
    logger.warn("DLQ refused a message; left in the queue for its redrive policy", {
      message_id: item.entry.message.MessageId,
      code: f.Code,
    });
  }
  return sent;
}

/** Set the visibility timeout of up to 10 messages; entry ids are their indexes. */
function changeVisibility(
  deps: AcknowledgerDeps,
  group: ReadonlyArray<{ receiptHandle: string }>,
  seconds: number,
  deadlineMs = SQS_CALL_DEADLINE_MS,
) {
  const { sqs, queueUrl } = deps;
  const entries = group.map((e, i) => ({ Id: String(i), ReceiptHandle: e.receiptHandle, VisibilityTimeout: seconds }));
  return boundedSqsCall(
    (options) => sqs.send(new ChangeMessageVisibilityBatchCommand({ QueueUrl: queueUrl, Entries: entries }), options),
    deadlineMs,
  );
}

/**
 * Keep in-flight messages invisible while they wait, at the queue's own timeout: a message
 * is extended once half its timeout has passed, and the timer ticks every quarter, so the
 * extension lands by three quarters of the timeout at the latest.
 */
async function heartbeat(deps: AcknowledgerDeps): Promise<void> {
  const { visibilityTimeoutSeconds, logger } = deps;
  // With a timeout of 0 there is nothing to extend: "extending" to 0 would release.
  if (visibilityTimeoutSeconds <= 0) return;
  const halfTimeoutMs = (visibilityTimeoutSeconds * 1000) / 2;
  const due = deps.ledger.entries().filter((e) => Date.now() - e.extendedAt >= halfTimeoutMs);
  await Promise.all(
    chunk(due, SQS_MAX_BATCH).map(async (group) => {
      // The new timeout counts from when SQS gets the call, not from its answer: note the
      // earlier time, so the next extension is never late.
      const sentAt = Date.now();
      try {
        const result = await changeVisibility(deps, group, visibilityTimeoutSeconds);
        const failedIds = new Set((result.Failed ?? []).map((f) => f.Id));
        group.forEach((e, i) => {
          if (!failedIds.has(String(i))) e.extendedAt = sentAt;
        });
        logger.debug("extended visibility", {
          count: group.length - failedIds.size,
          seconds: visibilityTimeoutSeconds,
        });
        if (failedIds.size > 0) logger.warn("SQS did not extend visibility", { count: failedIds.size });
      } catch (error) {
        logger.warn("SQS visibility extension failed", { reason: describeSqsError(error) });
      }
    }),
  );
}

/** Make messages visible again in `seconds` (not after their timeout), and stop holding them. */
async function release(
  deps: AcknowledgerDeps,
  entries: readonly InFlight[],
  deadlineMs: number,
  seconds = 0,
): Promise<void> {
  const { logger } = deps;
  const unfinished = entries.filter((e) => deps.ledger.has(e));
  await Promise.all(
    chunk(entries, SQS_MAX_BATCH).map(async (group) => {
      try {
        const { Failed = [] } = await changeVisibility(deps, group, seconds, deadlineMs);
        // A stale receipt (the message was received again since) needs nothing from us.
        const failed = Failed.filter((f) => f.Code !== "ReceiptHandleIsInvalid");
        if (failed.length > 0) {
          logger.warn("SQS did not release some messages; they return after their visibility timeout", {
            count: failed.length,
            code: failed[0]!.Code,
          });
        }
      } catch (error) {
        logger.warn("could not release messages; they return after their visibility timeout", {
          reason: describeSqsError(error),
        });
      }
    }),
  );
  deps.stats.released += unfinished.length;
  deps.ledger.settle(unfinished);
}
