/**
 * The handler port: what the SQS source hands its batches to. The source receives, holds,
 * batches, acknowledges, keeps slow work invisible and stops; a handler decodes a message,
 * writes a batch and says what a failure means. The login pipeline (src/pipeline.ts) is one.
 *
 * @module
 */
import type { Message } from "@aws-sdk/client-sqs";

/** A message decoded: a value to batch, or why it can never be handled (bound for the DLQ). */
export type Decoded<T> = { ok: true; value: T } | { ok: false; reason: string };

/** What a batch came to once written: every item not refused is done, and deleted from the queue. */
export interface BatchOutcome {
  /** Items written now. */
  loaded: number;
  /** Items found written before (a redelivery): done, not written again. */
  duplicates: number;
  /** Items the sink refused for their data, by their index in the batch, with a reason that quotes no value. */
  refused: ReadonlyArray<{ index: number; reason: string }>;
}

/** One batch, prepared once; its write may be called again after a transient failure. */
export interface BatchWrite {
  /** Write it. `signal` abandons the write (the batch's deadline, or a stop's). */
  write(signal: AbortSignal): Promise<BatchOutcome>;
}

/** How a failure is met: waited out and retried, or the run stopped. */
export type FailureKind = "transient" | "fatal";

export interface BatchHandler<T> {
  /** The service writes go to, as logs and metrics name it (`waiting_for`): `postgres`. */
  readonly service: string;
  /** The same, as a sentence names it: `Postgres`. */
  readonly serviceName: string;
  /** Decode and validate one message. Must not throw; reasons name a field and a rule, never a value. */
  decode(message: Message): Decoded<T>;
  /** Prepare a batch (mask it, say): done once, whatever its write's retries. */
  prepare(items: readonly T[]): Promise<BatchWrite>;
  /** What a failed write means. */
  classify(error: unknown): FailureKind;
  /** A failure as one line that holds no value, for the log. */
  describe(error: unknown): string;
  /** What a fatal failure stops the run with: one line that says what to do. */
  fatal(error: unknown): Error;
  /** While writes fail: resolves once a write would go through again, rejects while not. */
  probe(signal: AbortSignal): Promise<void>;
}
