/**
 * Receiving: several receives in flight, each waiting for room first. Room is counted in
 * messages and in bytes (a receive may bring ten of SQS's largest bodies), beside what is
 * held and what the receives on the way may bring. A stop aborts the receives parked in a
 * long poll, but lets young ones answer, and hands back what they bring.
 *
 * @module
 */
import { type Message, ReceiveMessageCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { FatalError } from "../errors.ts";
import {
  boundedSqsCall,
  describeSqsError,
  isTransientSqsError,
  SQS_CALL_DEADLINE_MS,
  SQS_MAX_BATCH,
  SQS_MAX_BATCH_BYTES,
} from "../sqs.ts";
import { sleep } from "../timing.ts";
import type { Ledger } from "./ledger.ts";
import type { ConsumerStats } from "./options.ts";
import type { Retrying } from "./retry.ts";

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

/** What receiving reads: the queue and how to ask it, the bounds, the ledger, and the stop. */
export interface ReceiverDeps {
  sqs: SQSClient;
  queueUrl: string;
  waitTimeSeconds: number;
  visibilityTimeoutSeconds: number;
  batchSize: number;
  concurrency: number;
  maxInFlightBytes: number;
  ledger: Ledger;
  stats: Pick<ConsumerStats, "received">;
  retrying: Retrying;
  /** Aborted when a stop begins: receives and their waits end. */
  receiving: AbortSignal;
  stopping(): boolean;
  /** Takes the messages of a receive that answered before the stop. */
  deliver(messages: readonly Message[]): void;
  /** Whether receiving should wait (the handler's writes are failing). */
  paused(): boolean;
}

interface ReceiverState {
  readonly deps: ReceiverDeps;
  /** Backpressure: receive no more while this many messages await their commit and delete. */
  readonly maxInFlight: number;
  /** Each receive in flight: when it started, and the timer that aborts it on stop. */
  readonly active: Map<AbortController, { startedAt: number; abortTimer?: ReturnType<typeof setTimeout> }>;
  /** What the next receive may bring, in bytes. */
  bytesEstimate: number;
  answered: number;
  lastEmptyAt: number;
  abortedPollsEndAt: number;
}

export function createReceiver(deps: ReceiverDeps): Receiver {
  const { batchSize, concurrency } = deps;
  const state: ReceiverState = {
    deps,
    maxInFlight: Math.max(batchSize * 3, concurrency * SQS_MAX_BATCH * 2),
    active: new Map(),
    // Until the first receive answers, assume the largest (ten bodies of SQS's largest size),
    // so that one receive goes alone; from then on, what receives bring.
    bytesEstimate: SQS_MAX_BATCH * SQS_MAX_BATCH_BYTES,
    answered: 0,
    lastEmptyAt: 0,
    abortedPollsEndAt: 0,
  };
  return {
    poll: () => poll(state),
    abortParked: () => abortParked(state),
    get lastEmptyAt() {
      return state.lastEmptyAt;
    },
    get abortedPollsEndAt() {
      return state.abortedPollsEndAt;
    },
  };
}

/** Whether one more receive fits: its ten messages and its bytes, beside those held and those on the way. */
function roomForReceive(state: ReceiverState): boolean {
  const { ledger, maxInFlightBytes, paused } = state.deps;
  if (paused()) return false;
  const coming = state.active.size + 1;
  // One receive at a time always fits, whatever the bounds: the run must move.
  if (coming === 1 && ledger.size === 0) return true;
  return ledger.size + coming * SQS_MAX_BATCH <= state.maxInFlight &&
    ledger.bytes + coming * state.bytesEstimate <= maxInFlightBytes;
}

/** Wait for room, then count the receive in before anyone else looks. */
async function startReceive(state: ReceiverState): Promise<AbortController | undefined> {
  const { stopping, ledger } = state.deps;
  while (!stopping() && !roomForReceive(state)) await ledger.changed();
  if (stopping()) return undefined;
  const receive = new AbortController();
  state.active.set(receive, { startedAt: Date.now() });
  return receive;
}

function receiveOnce(state: ReceiverState, receive: AbortController): Promise<Message[]> {
  const { sqs, queueUrl, waitTimeSeconds, visibilityTimeoutSeconds } = state.deps;
  // Each attempt is a long poll of its own in SQS: a retried one, sent seconds after the
  // first, also ends that much later, and a stop's release must wait for it.
  state.active.get(receive)!.startedAt = Date.now();
  const command = new ReceiveMessageCommand({
    QueueUrl: queueUrl,
    MaxNumberOfMessages: SQS_MAX_BATCH,
    // Always explicit: the heartbeat and the ledger reckon with this one, whatever the queue says.
    VisibilityTimeout: visibilityTimeoutSeconds,
    WaitTimeSeconds: waitTimeSeconds,
    // A FIFO queue's group and sequence number go with a dead-letter entry; standard queues
    // have neither. The source's own attributes are kept on a dead-letter entry too.
    MessageSystemAttributeNames: ["SentTimestamp", "MessageGroupId", "SequenceNumber"],
    MessageAttributeNames: ["All"],
  });
  return boundedSqsCall(
    (options) => sqs.send(command, options).then(({ Messages = [] }) => Messages),
    waitTimeSeconds * 1000 + SQS_CALL_DEADLINE_MS,
    receive.signal,
  );
}

function noteAnswer(state: ReceiverState, messages: readonly Message[]): void {
  state.deps.stats.received += messages.length;
  let bytes = 0;
  for (const message of messages) bytes += message.Body?.length ?? 0;
  state.bytesEstimate = state.answered++ === 0 ? bytes : Math.max(bytes, state.bytesEstimate * RECEIVE_ESTIMATE_DECAY);
}

/** Receive until a stop, one receive at a time, handing what comes on. */
async function poll(state: ReceiverState): Promise<void> {
  const { deps } = state;
  while (!deps.stopping()) {
    const receive = await startReceive(state);
    if (!receive) return;
    try {
      const messages = await deps.retrying({
        service: "sqs",
        message: "SQS receive failed, retrying",
        isTransient: isTransientSqsError,
        describe: describeSqsError,
        fatal: (error) => new FatalError(`SQS receive failed: ${describeSqsError(error)}`),
        signal: deps.receiving,
      }, () => receiveOnce(state, receive));
      if (!messages) return;
      noteAnswer(state, messages);
      await handOn(state, messages);
    } finally {
      // A pending abort timer would hold the process open after the run.
      clearTimeout(state.active.get(receive)?.abortTimer);
      state.active.delete(receive);
      deps.ledger.wake();
    }
  }
}

/** Deliver what a receive brought; after a stop, only hold it, to be handed back. */
async function handOn(state: ReceiverState, messages: readonly Message[]): Promise<void> {
  const { deps } = state;
  if (messages.length === 0) {
    state.lastEmptyAt = Date.now();
    if (deps.waitTimeSeconds === 0) await sleep(EMPTY_SHORT_POLL_PAUSE_MS, deps.receiving);
  } else if (deps.stopping()) {
    for (const message of messages) deps.ledger.receive(message);
  } else {
    deps.deliver(messages);
  }
}

/**
 * A receive aborted while its answer is on the way leaves those messages invisible for a
 * whole timeout, as if lost: young ones get to answer.
 */
function abortParked(state: ReceiverState): void {
  const { waitTimeSeconds } = state.deps;
  for (const [receive, active] of state.active) {
    state.abortedPollsEndAt = Math.max(state.abortedPollsEndAt, active.startedAt + waitTimeSeconds * 1000);
    const wait = RECEIVE_SETTLE_MS - (Date.now() - active.startedAt);
    if (wait <= 0) receive.abort();
    else active.abortTimer = setTimeout(() => receive.abort(), wait);
  }
}
