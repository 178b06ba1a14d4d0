/**
 * Logging through pino: one JSON object per line on stderr for machines, or pino-pretty's
 * one-line form for people (`--log-format`; the command line's default in a terminal). Nothing logged here ever carries a message body or a raw
 * `ip` or `device_id`: callers pass counts, ids and scrubbed reasons, and pino's `redact`
 * censors those fields by name as a second guard. A leaf: it imports no file of the project.
 *
 * @module
 */
import process from "node:process";
import { type DestinationStream, pino } from "pino";
import { prettyFactory } from "pino-pretty";

export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";
export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error", "silent"];

/** JSON lines for machines, or pino-pretty's one readable line per event. */
export type LogFormat = "json" | "pretty";
export const LOG_FORMATS: readonly LogFormat[] = ["json", "pretty"];

export type LogFields = Record<string, string | number | boolean | undefined>;

/**
 * What the tool logs through: a message and flat fields. A library user may pass their own
 * (any object with these four methods) to `createConsumer`.
 */
export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

/** Options of `createLogger`. */
export interface LoggerOptions {
  /** The least severe level written (default `info`); `silent` writes nothing. */
  level?: LogLevel;
  /** One readable line per event (for a terminal) instead of JSON. */
  pretty?: boolean;
  /** Where each line goes, without its newline (default: stderr). */
  write?: (line: string) => void;
}

/** Fields no log line may carry, whatever a caller passes: censored by name, at any depth up to one. */
const PII_FIELD_PATHS = ["ip", "device_id", "body", "Body", "*.ip", "*.device_id", "*.body", "*.Body"];

/**
 * A logger writing one line per event.
 *
 * @example
 * ```ts
 * const logger = createLogger({ level: "debug", pretty: process.stderr.isTTY });
 * logger.info("consuming", { queue: "login-queue", batch_size: 500 });
 * ```
 */
export function createLogger({ level = "info", pretty = false, write }: LoggerOptions = {}): Logger {
  // pino-pretty's formatter, used synchronously: its stream form pipes into a stream of its
  // own, and a log line must be out before the progress line is drawn again.
  const format = pretty
    ? prettyFactory({ singleLine: true, translateTime: "HH:MM:ss.l", ignore: "pid,hostname" })
    : undefined;
  const destination: DestinationStream = write || format
    ? { write: (chunk: string) => (write ?? writeStderr)((format ? format(chunk) : chunk).replace(/\n$/, "")) }
    : pino.destination({ fd: 2, sync: true });
  const log = pino({
    level,
    base: undefined,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    redact: { paths: PII_FIELD_PATHS, censor: "[redacted]" },
  }, destination);
  return {
    debug: (message, fields) => log.debug(fields ?? {}, message),
    info: (message, fields) => log.info(fields ?? {}, message),
    warn: (message, fields) => log.warn(fields ?? {}, message),
    error: (message, fields) => log.error(fields ?? {}, message),
  };
}

function writeStderr(line: string): void {
  process.stderr.write(line + "\n");
}

/** A logger that writes nothing: the default where a caller passes none. */
export const SILENT_LOGGER: Logger = { debug() {}, info() {}, warn() {}, error() {} };
