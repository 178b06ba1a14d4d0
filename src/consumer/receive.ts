/**
 * Receiving: several receives in flight, each waiting for room first. Room is counted in
 * messages and in bytes (a receive may bring ten of SQS's largest bodies), beside what is
 * held and what the receives on the way may bring. A stop aborts the receives parked in a
 * long poll, but lets young ones answer, and hands back what they bring.
 *
 * @module
 */
import { type Message, ReceiveMessageCommand } from "@aws-sdk/client-sqs";
import { FatalError } from "../errors.ts";
import {
  boundedSqsCall, describeSqsError, isTransientSqsError, SQS_CALL_DEADLINE_MS, SQS_MAX_BATCH, SQS_MAX_BATCH_BYTES,
} from "../sqs.ts";
import { sleep } from "../timing.ts";
import type { ConsumerContext } from "./context.ts";
import { retrying } from "./retry.ts";

/** A receive older than this on stop is parked in a long poll, not answering. */
const RECEIVE_SETTLE_MS = 1_000;
/** A short poll answers at once: on an empty queue, pause this long before asking again. */
const EMPTY_SHORT_POLL_PAUSE_MS = 50;
/**
 * What one receive may bring is guessed from the largest recent one, which counts for less
 * with each receive after it: a burst of large bodies narrows the receives in flight at once,
 * and a run of small ones widens them again within some tens of receives.
 */
const RECEIVE_ESTIMATE_DECAY = 0.8;

export interface Receiver {
  /** Receive until a stop, handing what comes to `deliver`. */
  poll(): Promise<void>;
  /** At a stop: abort the receives parked in a long poll; young ones may still answer. */
  abortParked(): void;
  /** When the last receive came back empty (0 before any did). */
  readonly lastEmptyAt: number;
  /** Until when SQS may still answer the long polls a stop aborted. */
  readonly abortedPollsEndAt: number;
}

/**
 * @param deliver takes the messages of a receive that answered before the stop
 * @param paused whether receiving should wait (Postgres takes no writes)
 */
export function createReceiver(
  context: ConsumerContext,
  deliver: (messages: readonly Message[]) => void,
  paused: () => boolean,
): Receiver {
  const { settings, stats, ledger } = context;
  const { sqs, queueUrl, batchSize, concurrency, maxInFlightBytes, waitTimeSeconds } = settings;
  // Backpressure: receive no more while this many messages await their commit and delete.
  const maxInFlight = Math.max(batchSize * 3, concurrency * SQS_MAX_BATCH * 2);
  // Each receive in flight: its abort, when it started, and the timer that aborts it on stop.
  const active = new Map<AbortController, { startedAt: number; abortTimer?: ReturnType<typeof setTimeout> }>();
  // Until the first receive answers, assume the largest (ten bodies of SQS's largest size),
  // so that one receive goes alone; from then on, what receives bring.
  let bytesEstimate = SQS_MAX_BATCH * SQS_MAX_BATCH_BYTES;
  let answered = 0;
  let lastEmptyAt = 0;
  let abortedPollsEndAt = 0;

  /** Whether one more receive fits: its ten messages and its bytes, beside those held and those on the way. */
  function roomForReceive(): boolean {
    if (paused()) return false;
    const coming = active.size + 1;
    // One receive at a time always fits, whatever the bounds: the run must move.
    if (coming === 1 && ledger.size === 0) return true;
    return ledger.size + coming * SQS_MAX_BATCH <= maxInFlight && ledger.bytes + coming * bytesEstimate <= maxInFlightBytes;
  }

  /** Wait for room, then count the receive in before anyone else looks. */
  async function startReceive(): Promise<AbortController | undefined> {
    while (!context.stopping() && !roomForReceive()) await ledger.changed();
    if (context.stopping()) return undefined;
    const receive = new AbortController();
    active.set(receive, { startedAt: Date.now() });
    return receive;
  }

  function receiveOnce(receive: AbortController): Promise<Message[]> {
    return boundedSqsCall(
      (options) =>
        sqs.send(new ReceiveMessageCommand({
          QueueUrl: queueUrl,
          MaxNumberOfMessages: SQS_MAX_BATCH,
          WaitTimeSeconds: waitTimeSeconds,
          MessageSystemAttributeNames: ["SentTimestamp"],
        }), options).then(({ Messages = [] }) => Messages),
      waitTimeSeconds * 1000 + SQS_CALL_DEADLINE_MS,
      receive.signal,
    );
  }

  function noteAnswer(messages: readonly Message[]): void {
    stats.received += messages.length;
    let bytes = 0;
    for (const message of messages) bytes += message.Body?.length ?? 0;
    bytesEstimate = answered++ === 0 ? bytes : Math.max(bytes, bytesEstimate * RECEIVE_ESTIMATE_DECAY);
  }

  async function poll(): Promise<void> {
    while (!context.stopping()) {
      const receive = await startReceive();
      if (!receive) return;
      try {
        const messages = await retrying(context, {
          service: "sqs",
          message: "SQS receive failed, retrying",
          isTransient: isTransientSqsError,
          describe: describeSqsError,
          fatal: (error) => new FatalError(`SQS receive failed: ${describeSqsError(error)}`),
          signal: context.receiving,
        }, () => receiveOnce(receive));
        if (!messages) return;
        noteAnswer(messages);
        if (messages.length === 0) {
          lastEmptyAt = Date.now();
          if (waitTimeSeconds === 0) await sleep(EMPTY_SHORT_POLL_PAUSE_MS, context.receiving);
        } else if (context.stopping()) {
          // Not started: held only to be handed back at the end of the stop.
          for (const message of messages) ledger.receive(message);
        } else {
          deliver(messages);
        }
      } finally {
        // A pending abort timer would hold the process open after the run (a second, measured).
        clearTimeout(active.get(receive)?.abortTimer);
        active.delete(receive);
        ledger.wake();
      }
    }
  }

  /**
   * A receive aborted while its answer is on the way leaves those messages invisible for a
   * whole timeout, as if lost (found by the clean-stop test): young ones get to answer.
   */
  function abortParked(): void {
    for (const [receive, state] of active) {
      abortedPollsEndAt = Math.max(abortedPollsEndAt, state.startedAt + waitTimeSeconds * 1000);
      const wait = RECEIVE_SETTLE_MS - (Date.now() - state.startedAt);
      if (wait <= 0) receive.abort();
      else state.abortTimer = setTimeout(() => receive.abort(), wait);
    }
  }

  return {
    poll,
    abortParked,
    get lastEmptyAt() {
      return lastEmptyAt;
    },
    get abortedPollsEndAt() {
      return abortedPollsEndAt;
    },
  };
}
