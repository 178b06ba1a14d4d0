/**
 * The login pipeline: the handler the SQS source hands its batches to. It decodes and
 * validates a message, masks a batch's PII with the strategy, and writes it to
 * `user_logins` in one transaction; what a failure means is Postgres's to say.
 *
 * @module
 */
import type { DatabasePool } from "slonik";
import { sql } from "slonik";
import type { MaskStrategy } from "./contract.ts";
import type { BatchHandler } from "./consumer/port.ts";
import type { Consumer, SourceOptions } from "./consumer/options.ts";
import { createSqsSource } from "./consumer/source.ts";
import { withDatabaseCallLimits } from "./database.ts";
import { asFatalError, describeDatabaseError, errorCode, FatalError } from "./errors.ts";
import { type MaskedRecord, maskRecord } from "./masking.ts";
import { classifyDatabaseError } from "./postgres-errors.ts";
import { decodeMessage, type LoginRecord } from "./schema.ts";
import { type CommitTrail, writeBatch } from "./write-batch.ts";

/** Where logins go, and how their PII is masked. */
export interface LoginSink {
  pool: DatabasePool;
  strategy: MaskStrategy;
}

/** A consumer of login events: the SQS source's options, with the sink its batches go to. */
export type ConsumerOptions = SourceOptions & LoginSink;

/** The login pipeline as a batch handler: decode, mask, write to `user_logins`. */
export function createLoginHandler({ pool, strategy }: LoginSink): BatchHandler<LoginRecord> {
  return {
    service: "postgres",
    serviceName: "Postgres",
    decode(message) {
      const decoded = decodeMessage(message);
      return decoded.ok ? { ok: true, value: decoded.record } : decoded;
    },
    async prepare(records) {
      const masked = await maskAll(strategy, records);
      // Across retries: a COMMIT whose answer was lost is looked up, not written again.
      const trail: CommitTrail = {};
      const indexOf = new Map(masked.map((m, i) => [m, i]));
      return {
        async write(signal) {
          const outcome = await withDatabaseCallLimits({ signal }, () => writeBatch(pool, strategy, masked, trail));
          return {
            loaded: outcome.inserted,
            duplicates: outcome.duplicates,
            refused: outcome.rejected.map((r) => ({ index: indexOf.get(r.masked)!, reason: r.reason })),
          };
        },
      };
    },
    classify: (error) => classifyDatabaseError(error) === "transient" ? "transient" : "fatal",
    describe: describeDatabaseError,
    fatal: fatalWriteError,
    async probe(signal) {
      // A write of no rows waits for the same table lock a batch would.
      await withDatabaseCallLimits(
        { signal },
        () => pool.query(sql.unsafe`INSERT INTO user_logins (user_id) SELECT NULL WHERE false`),
      );
    },
  };
}

async function maskAll(strategy: MaskStrategy, records: readonly LoginRecord[]): Promise<MaskedRecord[]> {
  const masked: MaskedRecord[] = [];
  for (const record of records) {
    const m = maskRecord(strategy, record);
    masked.push(m instanceof Promise ? await m : m);
  }
  return masked;
}

/** A write that waiting cannot fix, as one line that quotes no data. */
function fatalWriteError(error: unknown): Error {
  if (!(error instanceof FatalError) && classifyDatabaseError(error) === "fatal" && errorCode(error) !== undefined) {
    return new FatalError(`Postgres refused the write: ${describeDatabaseError(error)}`);
  }
  return asFatalError(error);
}

/**
 * Create a consumer of login events: an SQS source over the login pipeline. Every call to
 * SQS and Postgres has a deadline, what is held in flight is bounded in messages and bytes,
 * and a stop ends within its grace whatever blocks.
 *
 * @example
 * ```ts
 * const consumer = createConsumer({ sqs, pool, strategy, queueUrl, dlqUrl, drain: true });
 * const stats = await consumer.run();
 * ```
 */
export function createConsumer(options: ConsumerOptions): Consumer {
  const { pool, strategy, ...source } = options;
  return createSqsSource({ ...source, handler: createLoginHandler({ pool, strategy }) });
}
