/**
 * The one place that decides what a database error means: wait and retry, leave a row out,
 * or stop, and for a stop, what it is about. Callers branch on these verdicts, never on the
 * text of a described error (`describeDatabaseError`, in errors.ts).
 *
 * @module
 */
import {
  BackendTerminatedError,
  BackendTerminatedUnexpectedlyError,
  IdleTransactionTimeoutError,
  SchemaValidationError,
  StatementCancelledError,
  StatementTimeoutError,
} from "slonik";
import {
  ConfigError,
  describeDatabaseError,
  errorChain,
  errorCode,
  FatalError,
  networkErrorCode,
  redactUrl,
} from "./errors.ts";

/** How a failed database call should be handled: wait and retry, isolate the row, or stop. */
export type DatabaseErrorKind = "transient" | "row" | "fatal";

/** What a fatal database error is about, for the hint that fixes it. */
export type DatabaseFatalCause = "login" | "no-database" | "permission" | "no-table" | "other";

/**
 * Faults that pass: a connection lost, the server short of resources or shutting down,
 * contention (a lock not granted, `55P03`; a statement cancelled, `57014`, by an operator or
 * by the statement deadline while a lock is held past it), a read-only server during a
 * failover (`25006`), our transaction ended by the server's idle timeout (`25P03`: written
 * again on a fresh connection).
 */
const TRANSIENT_CODE_PREFIXES = ["08", "53", "57P", "57014", "40", "55P03", "58", "25006", "25P03"];
/** A SQLSTATE: five digits or capitals. Node's own codes (`ECONNREFUSED`) are not one. */
const SQLSTATE = /^[0-9A-Z]{5}$/;
const ROW_CODE_PREFIXES = ["22", "23", "54"];
/**
 * A database call of ours that may go through if made again: given up at its deadline, or
 * a COMMIT whose outcome Postgres has not settled yet.
 */
export class TransientDatabaseError extends Error {}

/**
 * Slonik's errors for a connection lost, a statement timed out or cancelled, where no
 * SQLSTATE came with them. Not `ConnectionError`: Slonik wraps every failure to connect in
 * it, a refused login as much as a lost connection, so its cause decides.
 */
const TRANSIENT_SLONIK_ERRORS = [
  BackendTerminatedError,
  BackendTerminatedUnexpectedlyError,
  StatementTimeoutError,
  StatementCancelledError,
  IdleTransactionTimeoutError,
];
/**
 * The pg client's own errors, which have neither code nor class, and which Slonik passes on
 * as they are: its connect timeout (a hung server, or a half-open path to it), a query on a
 * client whose connection already failed, a connection closed under it outside a query.
 * Their text is pg's, not a server's.
 */
const PG_CLIENT_TRANSIENT_MESSAGES = [
  "timeout expired",
  "Client has encountered a connection error and is not queryable",
  "Connection terminated",
];

/**
 * What a database error means.
 *
 * @returns "transient" (connection, shutdown, contention: wait and retry), "row" (the data
 *   of some row was rejected: isolate it), or "fatal" (permission, missing table: stop)
 */
export function classifyDatabaseError(error: unknown): DatabaseErrorKind {
  if (networkErrorCode(error)) return "transient";
  const chain = errorChain(error);
  // What the server said decides, wherever along the chain: a class wraps it.
  const sqlstate = chain.map((e) => e.code).find((code) => typeof code === "string" && SQLSTATE.test(code));
  if (sqlstate !== undefined) {
    if (TRANSIENT_CODE_PREFIXES.some((p) => sqlstate.startsWith(p))) return "transient";
    if (ROW_CODE_PREFIXES.some((p) => sqlstate.startsWith(p))) return "row";
    return "fatal";
  }
  const transient = chain.some((e) =>
    e instanceof TransientDatabaseError || TRANSIENT_SLONIK_ERRORS.some((type) => e instanceof type) ||
    PG_CLIENT_TRANSIENT_MESSAGES.some((m) => e.message.startsWith(m))
  );
  // Anything else stops, Slonik's InvalidInputError among them: it drops the 22P02 that
  // the table check compares, so a column whose type changed would send every row to the DLQ.
  return transient ? "transient" : "fatal";
}

/** What a fatal error is about, by its SQLSTATE: the login, the database, a grant, a table. */
export function fatalDatabaseCause(error: unknown): DatabaseFatalCause {
  const code = errorCode(error) ?? "";
  if (code.startsWith("28")) return "login";
  if (code === "3D000") return "no-database";
  if (code === "42501") return "permission";
  if (code === "42P01") return "no-table";
  return "other";
}

/** Describe any error thrown at start-up as one line, without a stack trace, with the hint that fixes it. */
export function describeStartupError(error: unknown, databaseUrl: string): string {
  if (error instanceof ConfigError || error instanceof FatalError) return error.message;
  // Deno's refusal says which permission, and its flag.
  if ((error as Error)?.name === "NotCapable") return (error as Error).message.split("\n")[0]!;
  return describeConnectionError(error, databaseUrl);
}

/** Slonik's check of the URL's query parameters: the first issue names the parameter and what it takes. */
interface QueryParameterIssue {
  path?: unknown[];
  values?: unknown[];
}

/**
 * A failure to connect or set up, as one line with the hint that fixes it: the URL (its
 * secrets hidden), and what to check. Never the password, never a value from a row.
 */
export function describeConnectionError(error: unknown, databaseUrl: string): string {
  const chain = errorChain(error);
  const where = redactUrl(databaseUrl);
  const text = describeDatabaseError(error);
  if (chain.some((e) => e instanceof SchemaValidationError)) return `Unexpected row shape: ${text}`;
  const parameter = (error as { name?: string; issues?: QueryParameterIssue[] })?.name === "ZodError"
    ? (error as { issues: QueryParameterIssue[] }).issues[0]
    : undefined;
  if (parameter) {
    const takes = parameter.values ? `: it takes ${parameter.values.join(", ")}` : "";
    return `The URL's ${
      parameter.path?.join(".") ?? "query"
    } parameter is not one the Postgres client takes${takes} (check --database-url)`;
  }
  if (chain.some((e) => e instanceof URIError)) {
    return `The password in ${where} holds a % that is not a percent-escape: write % as %25 (or leave the password out of the URL and set PGPASSWORD)`;
  }
  const messages = chain.map((e) => e.message).join("\n");
  if (/client password must be a (non-empty )?string/.test(messages)) {
    // Slonik reads the password from the URL's userinfo only; pg falls back to PGPASSWORD.
    const ignored = parseUrl(databaseUrl)?.searchParams.has("password") ? " (a ?password= parameter is not read)" : "";
    return `Postgres at ${where} asks for a password and none was given: put it in the URL (postgres://user:PASSWORD@host/db, percent-encoded) or set PGPASSWORD${ignored}`;
  }
  if (classifyDatabaseError(error) === "transient") {
    // A connection that closes before any Postgres message: something else listens there.
    if (/Connection terminated unexpectedly/.test(messages) && errorCode(error) === undefined) {
      return `Something at ${where} hung up without speaking Postgres: is the port right? (Postgres listens on 5432 unless told otherwise; check --database-url)`;
    }
    return `Cannot reach Postgres at ${where}: ${text} (is it running? check --database-url)`;
  }
  return describeFatalCause(fatalDatabaseCause(error), text, where, databaseUrl);
}

function describeFatalCause(cause: DatabaseFatalCause, text: string, where: string, databaseUrl: string): string {
  switch (cause) {
    case "login":
      return `Postgres refused the login at ${where}: ${text} (check the user and password)`;
    case "no-database": {
      const url = parseUrl(databaseUrl);
      const name = url ? decodeURIComponent(url.pathname.slice(1)) || "(none)" : "(unknown)";
      return `Database ${name} does not exist at ${where}: create it (CREATE DATABASE ${name}) or fix the name in the URL's path`;
    }
    case "permission":
      return `Permission denied at ${where}: ${text} (grant CREATE on the schema or create user_logins first)`;
    default:
      return `Postgres error at ${where}: ${text}`;
  }
}

function parseUrl(raw: string): URL | undefined {
  try {
    return new URL(raw);
  } catch {
    return undefined;
  }
}
