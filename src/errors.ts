/**
 * The tool's error kinds, its exit codes, and what may be said of an error: its first line
 * with quoted text elided, raw values redacted, URLs without their secrets, and how a
 * command ends on a failure. A leaf: it imports no file of the project.
 *
 * @module
 */
import process from "node:process";

/** Exit code for a usage or configuration error (wrong flag, missing key). */
export const EXIT_USAGE = 2;
/** Exit code for a runtime failure (unreachable service, missing permission). */
export const EXIT_FAILURE = 1;
/** Exit code for a second SIGINT/SIGTERM during a stop: exit at once, as shells expect of Ctrl-C. */
export const EXIT_SECOND_SIGNAL = 130;

/** A mistake in how the tool was invoked: the message says what is wrong and how to fix it. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** A failure the tool cannot recover from by waiting: the message says what to do about it. */
export class FatalError extends Error {
  override name = "FatalError";
}

/** How `failed` says a failure, and which exit code it ends with. */
export interface FailureReport {
  /** The one line after `error: `; by default the error's message (a ConfigError's says the fix). */
  describe?(error: unknown): string;
  /** A usage error whatever its kind: it happened while reading the arguments. */
  usage?: boolean;
}

/**
 * How every command ends on a failure: one line on stderr, `error: ` and the first line of
 * what `describe` says, and the exit code of its kind: 2 for a usage error (a `ConfigError`,
 * or any error while reading the arguments), else 1.
 *
 * @returns the exit code
 */
export function failed(error: unknown, report: FailureReport = {}): number {
  const text = report.describe?.(error) ?? (error instanceof Error ? error.message : String(error));
  // One line, whatever threw: what a message says past its first line is detail (a stack, a dump).
  process.stderr.write(`error: ${text.split("\n")[0]}\n`);
  return report.usage || error instanceof ConfigError ? EXIT_USAGE : EXIT_FAILURE;
}

/**
 * A failure that stops a run, as one line that quotes no data: a `FatalError` as it is
 * (its message says what to do), anything else as an unexpected failure, scrubbed (it may
 * quote a value).
 */
export function asFatalError(error: unknown): FatalError {
  if (error instanceof FatalError) return error;
  return new FatalError(`Unexpected failure: ${firstLineScrubbed(error)}`);
}

/** An error with the `code` Node (`ECONNREFUSED`) and Postgres (SQLSTATE `23505`) give theirs. */
export type CodedError = Error & { code?: string };

/** The error and its causes, outermost first (eight at most: a cycle must not hang us). */
export function errorChain(error: unknown): CodedError[] {
  const chain: CodedError[] = [];
  for (let e = error; e instanceof Error && chain.length < 8; e = (e as Error).cause) chain.push(e);
  return chain;
}

/** The first `code` along the chain: a SQLSTATE from Postgres, or a system error code from Node. */
export function errorCode(error: unknown): string | undefined {
  return errorChain(error).find((e) => typeof e.code === "string")?.code;
}

/** System error codes of a network that failed or is not there yet: worth waiting out. */
const NETWORK_ERROR_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  "ENOTFOUND",
]);

/** Whether a code along the chain says the network failed (refused, reset, unreachable, no name). */
export function networkErrorCode(error: unknown): string | undefined {
  return errorChain(error).find((e) => typeof e.code === "string" && NETWORK_ERROR_CODES.has(e.code))?.code;
}

/**
 * Errors whose message quotes only identifiers and types (a column, a relation, a function,
 * never a row's value): kept as they are, to say what drifted.
 */
const QUOTES_IDENTIFIERS = new Set(["42703", "42P01", "42704", "42883", "42804"]);

/**
 * A database error as one line that holds no data: its SQLSTATE, its message, table,
 * constraint and column. Postgres quotes values in its messages and puts them in DETAIL, so quoted
 * text is elided and DETAIL is never read.
 */
export function describeDatabaseError(error: unknown): string {
  const chain = errorChain(error);
  const withCode = chain.find((e) => typeof e.code === "string") as
    | (CodedError & { code: string; table?: string; constraint?: string; column?: string })
    | undefined;
  const source = withCode ?? chain[0];
  if (!source) return String(error);
  const firstLine = source.message.split("\n")[0]!;
  const message = withCode && QUOTES_IDENTIFIERS.has(withCode.code) ? firstLine : scrubQuoted(firstLine);
  const parts = [withCode ? `${withCode.code} ${message}` : message];
  // Identifiers are not PII: the quoted ones are elided with the values, so name them here.
  if (withCode?.table) parts.push(`table ${withCode.table}`);
  if (withCode?.constraint) parts.push(`constraint ${withCode.constraint}`);
  if (withCode?.column) parts.push(`column ${withCode.column}`);
  return parts.join(", ");
}

/** An error's first line with quoted text elided, for a message that may quote data. */
export function firstLineScrubbed(error: unknown): string {
  return scrubQuoted((error instanceof Error ? error.message : String(error)).split("\n")[0]!);
}

/** Quoted text elided: Postgres and validators quote the values they refuse. */
export function scrubQuoted(text: string): string {
  return text.replace(/"[^"]*"/g, '"…"').replace(/'[^']*'/g, "'…'");
}

/** Remove every occurrence of the given raw values from a text bound for a log or the DLQ. */
export function redactValues(text: string, rawValues: readonly string[]): string {
  let result = text;
  for (const value of rawValues) {
    if (value.length > 0) result = result.split(value).join("[redacted]");
  }
  return result;
}

/** Query parameters that carry a secret: libpq's passwords, AWS's signatures and tokens. */
const SECRET_PARAMETER = /pass|secret|token|signature|credential|key/i;

/** The URL with every secret-bearing part (password, secret query parameters) hidden, safe to print. */
export function redactUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return "(a URL that does not parse)";
  }
  if (url.password) url.password = "***";
  // Rebuilt by hand: URLSearchParams would percent-encode the stars.
  const query = [...url.searchParams].map(([name, value]) =>
    `${encodeURIComponent(name)}=${SECRET_PARAMETER.test(name) ? "***" : encodeURIComponent(value)}`
  );
  url.search = "";
  return url.toString() + (query.length > 0 ? `?${query.join("&")}` : "");
}
