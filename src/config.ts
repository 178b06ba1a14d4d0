/**
 * Configuration: flags > environment > defaults, every value checked up front, and an
 * error that names what the user wrote (the flag, or the variable) and how to fix it.
 *
 * @module
 */
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import {
  DEFAULT_BATCH_DEADLINE_SECONDS,
  DEFAULT_BATCH_SIZE,
  DEFAULT_CONCURRENCY,
  DEFAULT_MAX_IN_FLIGHT_MB,
  DEFAULT_STOP_GRACE_SECONDS,
} from "./consumer/options.ts";
import { ConfigError } from "./errors.ts";
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from "./log.ts";
import { DEFAULT_STRATEGY } from "./masking.ts";

/** This release; package.json and deno.json carry the same (a test holds them together). */
export const VERSION = "0.1.0";

/** Everything the tool needs to run, after flags, environment and defaults are applied. */
export interface Config {
  queueUrl: string;
  dlqUrl: string | undefined;
  databaseUrl: string;
  strategy: string;
  drain: boolean;
  batchSize: number;
  concurrency: number;
  logLevel: LogLevel;
  /** JSON lines, or one readable line per event; undefined: readable in a terminal only. */
  logFormat: LogFormat | undefined;
  /** Serve /metrics, /healthz and /readyz on this port; none when undefined. */
  metricsPort: number | undefined;
  /** The address the metrics server listens on; every interface when undefined. */
  metricsHost: string | undefined;
  stopGraceSeconds: number;
  batchDeadlineSeconds: number;
  maxInFlightMb: number;
  help: boolean;
  version: boolean;
}

const FLAGS = {
  "queue-url": { type: "string" },
  "dlq-url": { type: "string" },
  "database-url": { type: "string" },
  strategy: { type: "string" },
  drain: { type: "boolean" },
  "batch-size": { type: "string" },
  concurrency: { type: "string" },
  "log-level": { type: "string" },
  "log-format": { type: "string" },
  "metrics-port": { type: "string" },
  "metrics-host": { type: "string" },
  "stop-grace": { type: "string" },
  "batch-deadline": { type: "string" },
  "max-in-flight-mb": { type: "string" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
} as const;

/** A setting's value and where it came from, so that an error names what the user wrote. */
interface Setting {
  value: string;
  /** `--flag` or the environment variable's name. */
  source: string;
}

/**
 * Apply flags > environment > defaults and check everything up front.
 *
 * @param argv the command-line arguments after the script name
 * @param env the environment (`process.env`)
 * @returns the complete configuration
 * @throws {ConfigError} naming the flag or variable and how to fix it
 * @example
 * ```ts
 * const config = parseConfig(["--drain"], { QUEUE_URL: "...", DATABASE_URL: "..." });
 * ```
 */
export function parseConfig(argv: readonly string[], env: Record<string, string | undefined>): Config {
  const values = parseFlags(argv, FLAGS);
  const help = values.help === true;
  const version = values.version === true;
  const pick = (flag: string, variable?: string): Setting | undefined => {
    const fromFlag = values[flag] as string | undefined;
    const [value, source] = fromFlag !== undefined
      ? [fromFlag, `--${flag}`]
      : [variable ? env[variable] : undefined, variable ?? ""];
    return value === undefined || value.trim() === "" ? undefined : { value: value.trim(), source };
  };
  const count = (setting: Setting | undefined, fallback: number, min: number, max: number) =>
    parseCount(setting?.value, setting?.source ?? "", fallback, min, max);
  const queueUrl = pick("queue-url", "QUEUE_URL");
  const dlqUrl = pick("dlq-url", "DLQ_URL");
  const databaseUrl = pick("database-url", "DATABASE_URL");
  const config: Config = {
    queueUrl: queueUrl?.value ?? "",
    dlqUrl: dlqUrl?.value,
    databaseUrl: databaseUrl?.value ?? "",
    strategy: pick("strategy", "MASK_STRATEGY")?.value ?? DEFAULT_STRATEGY,
    drain: values.drain === true,
    batchSize: count(pick("batch-size"), DEFAULT_BATCH_SIZE, 1, 10_000),
    concurrency: count(pick("concurrency"), DEFAULT_CONCURRENCY, 1, 64),
    logLevel: parseLogLevel(pick("log-level", "LOG_LEVEL")),
    logFormat: parseChoice(pick("log-format", "LOG_FORMAT"), LOG_FORMATS),
    metricsPort: optionalCount(pick("metrics-port", "METRICS_PORT"), 1, 65_535),
    metricsHost: pick("metrics-host", "METRICS_HOST")?.value,
    stopGraceSeconds: count(pick("stop-grace", "STOP_GRACE_SECONDS"), DEFAULT_STOP_GRACE_SECONDS, 0, 3_600),
    batchDeadlineSeconds: count(
      pick("batch-deadline", "BATCH_DEADLINE_SECONDS"),
      DEFAULT_BATCH_DEADLINE_SECONDS,
      1,
      86_400,
    ),
    maxInFlightMb: count(pick("max-in-flight-mb", "MAX_IN_FLIGHT_MB"), DEFAULT_MAX_IN_FLIGHT_MB, 1, 65_536),
    help,
    version,
  };
  if (help || version) return config;
  parseQueueUrl(queueUrl?.value, queueUrl?.source);
  if (dlqUrl) checkUrl(dlqUrl.value, dlqUrl.source, ["http:", "https:"]);
  if (dlqUrl && dlqUrl.value === queueUrl?.value) {
    throw new ConfigError(
      `${dlqUrl.source} is the same queue as ${queueUrl.source}: invalid messages would come straight back`,
    );
  }
  if (!databaseUrl) throw new ConfigError("No database given: pass --database-url URL or set DATABASE_URL");
  checkUrl(databaseUrl.value, databaseUrl.source, ["postgres:", "postgresql:"]);
  return config;
}

/**
 * Parse flags strictly, as every command of the project does (mod.ts and scripts/).
 *
 * @throws {ConfigError} for an unknown flag or a missing value, pointing to --help
 */
export function parseFlags(
  argv: readonly string[],
  options: ParseArgsOptionsConfig,
): Record<string, string | boolean | (string | boolean)[] | undefined> {
  try {
    return parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }).values;
  } catch (error) {
    // node's messages are long and mention internals; keep the first sentence, which the user acts on.
    const message = error instanceof Error
      ? error.message.split("\n")[0]!.split(". ")[0]!.replace(/\.$/, "")
      : String(error);
    throw new ConfigError(`${message}; run with --help to see the flags`);
  }
}

/**
 * The source queue's URL (from --queue-url or QUEUE_URL), checked.
 *
 * @param source where it came from, for the error: the flag or the variable
 * @throws {ConfigError} when it is missing or not an http(s) URL
 */
export function parseQueueUrl(raw: string | undefined, source = "--queue-url"): string {
  const queueUrl = raw?.trim();
  if (!queueUrl) throw new ConfigError("No queue given: pass --queue-url URL or set QUEUE_URL");
  checkUrl(queueUrl, source, ["http:", "https:"]);
  return queueUrl;
}

/**
 * A whole-number setting: `fallback` when absent.
 *
 * @param source where it came from, for the error: the flag (`--count`) or the variable (`METRICS_PORT`)
 * @throws {ConfigError} naming the source and the range when it is not a whole number in [min, max]
 */
export function parseCount(
  raw: string | undefined,
  source: string,
  fallback: number,
  min: number,
  max: number,
): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || value < min || value > max) {
    throw new ConfigError(`${source} must be a whole number from ${min} to ${max}, got "${raw}"`);
  }
  return value;
}

function optionalCount(setting: Setting | undefined, min: number, max: number): number | undefined {
  return setting === undefined ? undefined : parseCount(setting.value, setting.source, min, min, max);
}

/** Check a URL's form, naming where it came from; never echo it, since it may carry a password. */
function checkUrl(value: string, source: string, protocols: readonly string[]): void {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    // The usual cause: a password holding a character that ends the URL's userinfo early.
    const hint = /[#/?%]/.test(value.replace(/^[a-z]+:\/\//i, "").split("@").slice(0, -1).join("@"))
      ? "; if the password holds # / ? or %, percent-encode it (# as %23, / as %2F, ? as %3F, % as %25)"
      : "";
    throw new ConfigError(`${source} is not a URL: expected ${protocols[0]}//...${hint}`);
  }
  if (!protocols.includes(url.protocol)) {
    throw new ConfigError(`${source} must start with ${protocols.join(" or ")}//, got ${url.protocol}//`);
  }
}

function parseLogLevel(setting: Setting | undefined): LogLevel {
  return parseChoice(setting, LOG_LEVELS) ?? "info";
}

/** One of a few words, or undefined when not set. */
function parseChoice<T extends string>(setting: Setting | undefined, choices: readonly T[]): T | undefined {
  if (setting === undefined) return undefined;
  if (!(choices as readonly string[]).includes(setting.value)) {
    throw new ConfigError(`${setting.source} must be one of ${choices.join(", ")}, got "${setting.value}"`);
  }
  return setting.value as T;
}
