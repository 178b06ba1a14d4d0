/**
 * The Slonik pool, with a deadline on every database call. A server-side timeout cannot
 * reach a server across a half-open socket, so each call also has a client-side deadline,
 * and a call given up on closes its connection: the server then rolls its transaction
 * back, and the pool never hands that connection out again.
 *
 * @module
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { createPool, type DatabasePool, type DriverClient, type DriverFactory } from "slonik";
import { createPgDriverFactory } from "@slonik/pg-driver";
import { TransientDatabaseError } from "./postgres-errors.ts";
import { withTimeout } from "./timing.ts";
import { resultParserInterceptor } from "./typed-sql.ts";

/** Postgres cancels a statement that runs longer itself (`statement_timeout`). */
const STATEMENT_TIMEOUT_MS = 10_000;
/**
 * The client's own deadline for one database call: the server's timeout and time for its
 * answer. Past it no answer is coming (a half-open connection, a hung server), and a
 * server-side timeout cannot say so across a silent socket.
 */
export const DATABASE_CALL_DEADLINE_MS = STATEMENT_TIMEOUT_MS + 5_000;
/** The server ends a transaction left idle this long: its client may be gone without a word. */
const IDLE_IN_TRANSACTION_TIMEOUT_MS = 30_000;
/** Closing a connection waits this long at most for its last call and its goodbye. */
const CONNECTION_CLOSE_WAIT_MS = 1_000;
/** What bounds the database calls made inside `withDatabaseCallLimits`. */
export interface DatabaseCallLimits {
  /** Each call's deadline (default `DATABASE_CALL_DEADLINE_MS`). */
  deadlineMs?: number;
  /** When it aborts, the calls in progress are abandoned and new ones refused. */
  signal?: AbortSignal;
}

const callLimits = new AsyncLocalStorage<DatabaseCallLimits>();

/**
 * Run `work` with its database calls bounded by `limits`: a batch's deadline, a stop.
 *
 * @example
 * ```ts
 * await withDatabaseCallLimits({ signal: AbortSignal.timeout(60_000) }, () => writeBatch(pool, strategy, batch));
 * ```
 */
export function withDatabaseCallLimits<T>(limits: DatabaseCallLimits, work: () => Promise<T>): Promise<T> {
  return callLimits.run(limits, work);
}

/** A database call given up on: no answer by its deadline, or its work was abandoned. */
export class DatabaseCallAbandonedError extends TransientDatabaseError {
  override name = "DatabaseCallAbandonedError";
}

/**
 * Slonik's pg driver, with a deadline and an abandon signal on every call. A call given up
 * on destroys its connection: its socket may be half-open, and closing it is what makes the
 * server roll the transaction back; the pool never hands it out again. (pg's own
 * `query_timeout` leaves the connection in use, and Slonik's driver passes neither it nor
 * pg's `keepAlive`; the deadline covers what keepalive would find.)
 */
function withCallDeadlines(factory: DriverFactory): DriverFactory {
  return async (input) => {
    // Setting up reads type ids over a connection of its own: bounded like any call.
    const driver = await withTimeout(
      factory(input),
      DATABASE_CALL_DEADLINE_MS,
      () => new DatabaseCallAbandonedError(`no answer from Postgres within ${DATABASE_CALL_DEADLINE_MS / 1000} s`),
    );
    return {
      createClient: async () => {
        const client = await driver.createClient();
        let abandoned: Error | undefined;
        const abandon = (reason: string): Error => {
          if (!abandoned) {
            abandoned = new DatabaseCallAbandonedError(`${reason}; connection closed`);
            void client.destroy().catch(() => {});
          }
          return abandoned;
        };
        const query: DriverClient["query"] = (text, values, options) => {
          if (abandoned) return Promise.reject(abandoned);
          const { deadlineMs = DATABASE_CALL_DEADLINE_MS, signal } = callLimits.getStore() ?? {};
          if (signal?.aborted) return Promise.reject(abandon("call abandoned"));
          return new Promise((resolve, reject) => {
            const timer = setTimeout(
              () => reject(abandon(`no answer from Postgres within ${deadlineMs / 1000} s`)),
              deadlineMs,
            );
            const onAbort = () => reject(abandon("call abandoned"));
            signal?.addEventListener("abort", onAbort, { once: true });
            client.query(text, values, options).then(resolve, reject).finally(() => {
              clearTimeout(timer);
              signal?.removeEventListener("abort", onAbort);
            });
          });
        };
        return { ...client, query };
      },
    };
  };
}

/**
 * Create the Slonik pool. Every call has a client-side deadline (`withDatabaseCallLimits`),
 * statements a server-side one.
 *
 * @param databaseUrl postgres://user:password@host:port/database
 * @param maxPoolSize connections at most
 */
export async function createDatabasePool(databaseUrl: string, maxPoolSize = 4): Promise<DatabasePool> {
  return await createPool(databaseUrl, {
    driverFactory: withCallDeadlines(createPgDriverFactory()),
    interceptors: [resultParserInterceptor],
    maxPoolSize,
    connectionTimeout: 5_000,
    // Our own retry loop decides what is transient; Slonik's would retry inside it.
    connectionRetryLimit: 0,
    statementTimeout: STATEMENT_TIMEOUT_MS,
    idleInTransactionSessionTimeout: IDLE_IN_TRANSACTION_TIMEOUT_MS,
    gracefulTerminationTimeout: CONNECTION_CLOSE_WAIT_MS,
    // Slonik's reset on release, bounded: a reset that does not answer destroys the connection.
    resetConnection: ({ query }) =>
      withTimeout(
        query("DISCARD ALL"),
        DATABASE_CALL_DEADLINE_MS,
        () => new DatabaseCallAbandonedError("no answer to DISCARD ALL"),
      ),
    captureStackTrace: false,
  });
}
