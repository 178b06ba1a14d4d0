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
  STOP_MARGIN_SECONDS,
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

/** How a setting's text becomes its value. */
type SettingKind = "url" | "count" | "choice" | "text" | "switch";

/** The settings a run takes: each a key of {@link Config}, help and version aside. */
type SettingKey = Exclude<keyof Config, "help" | "version">;

/**
 * One setting: its flag, its variable, its default and range, and its help. The flags,
 * `--help`'s options, and the checks of `.env.example` and the README's table all come from
 * {@link SETTINGS}, so a setting is one entry here.
 */
export interface SettingSpec {
  readonly key: SettingKey;
  /** The flag, without its dashes. */
  readonly flag: string;
  /** The environment variable; none for a switch that only makes sense per run. */
  readonly env?: string;
  /** What `--help` shows after the flag: URL, N, S, NAME|PATH. */
  readonly value?: string;
  readonly kind: SettingKind;
  /** The default, when absent; none means required (the URLs) or off. */
  readonly fallback?: number | string;
  /** A count's whole-number range. */
  readonly range?: readonly [number, number];
  readonly choices?: readonly string[];
  /** The help line(s); `--help` adds the default and the variable. */
  readonly help: string;
}

/** Every setting, in `--help`'s order. */
export const SETTINGS: readonly SettingSpec[] = [
  { key: "queueUrl", flag: "queue-url", env: "QUEUE_URL", value: "URL", kind: "url", help: "source queue (required)" },
  {
    key: "dlqUrl",
    flag: "dlq-url",
    env: "DLQ_URL",
    value: "URL",
    kind: "url",
    help: "dead-letter queue for invalid messages (without it, or for a message too big for it, " +
      "invalid messages stay in the queue for SQS's own redrive policy, and are counted and logged)",
  },
  {
    key: "databaseUrl",
    flag: "database-url",
    env: "DATABASE_URL",
    value: "URL",
    kind: "url",
    help: "postgres://user:password@host:port/db (required; percent-encode # / ? % in the password, " +
      "or leave it out of the URL and set PGPASSWORD)",
  },
  {
    key: "strategy",
    flag: "strategy",
    env: "MASK_STRATEGY",
    value: "NAME|PATH",
    kind: "text",
    fallback: DEFAULT_STRATEGY,
    help: "hmac, sha256, vault, ipcrypt, ipcrypt-pfx, or a path to your own module",
  },
  {
    key: "drain",
    flag: "drain",
    kind: "switch",
    help: "stop when the queue is empty (nothing visible or in flight); without it, run until SIGINT/SIGTERM",
  },
  {
    key: "batchSize",
    flag: "batch-size",
    env: "BATCH_SIZE",
    value: "N",
    kind: "count",
    fallback: DEFAULT_BATCH_SIZE,
    range: [1, 10_000],
    help: "rows per insert transaction",
  },
  {
    key: "concurrency",
    flag: "concurrency",
    env: "CONCURRENCY",
    value: "N",
    kind: "count",
    fallback: DEFAULT_CONCURRENCY,
    range: [1, 64],
    help: "receives in flight",
  },
  {
    key: "maxInFlightMb",
    flag: "max-in-flight-mb",
    env: "MAX_IN_FLIGHT_MB",
    value: "N",
    kind: "count",
    fallback: DEFAULT_MAX_IN_FLIGHT_MB,
    range: [1, 65_536],
    help: "message bodies held in flight at most, in MiB: what bounds memory with large bodies",
  },
  {
    key: "batchDeadlineSeconds",
    flag: "batch-deadline",
    env: "BATCH_DEADLINE_SECONDS",
    value: "S",
    kind: "count",
    fallback: DEFAULT_BATCH_DEADLINE_SECONDS,
    range: [1, 86_400],
    help: "seconds a batch may take to commit before it is abandoned and its messages released for any consumer",
  },
  {
    key: "stopGraceSeconds",
    flag: "stop-grace",
    env: "STOP_GRACE_SECONDS",
    value: "S",
    kind: "count",
    fallback: DEFAULT_STOP_GRACE_SECONDS,
    range: [0, 3_600],
    help: "seconds a stop waits for what is in flight before it releases it to the queue; it exits " +
      `within S + ${STOP_MARGIN_SECONDS} s, so give orchestrators more`,
  },
  {
    key: "logLevel",
    flag: "log-level",
    env: "LOG_LEVEL",
    value: "LEVEL",
    kind: "choice",
    choices: LOG_LEVELS,
    fallback: "info",
    help: LOG_LEVELS.join(", "),
  },
  {
    key: "logFormat",
    flag: "log-format",
    env: "LOG_FORMAT",
    value: "FORMAT",
    kind: "choice",
    choices: LOG_FORMATS,
    help: "json (one object a line) or pretty (one readable line); default: pretty in a terminal, json elsewhere",
  },
  {
    key: "metricsPort",
    flag: "metrics-port",
    env: "METRICS_PORT",
    value: "N",
    kind: "count",
    range: [1, 65_535],
    help: "serve Prometheus /metrics, /healthz and /readyz on port N",
  },
  {
    key: "metricsHost",
    flag: "metrics-host",
    env: "METRICS_HOST",
    value: "ADDR",
    kind: "text",
    help: "address for the metrics port (default: every interface, as a container needs; 127.0.0.1 keeps it local)",
  },
];

const FLAGS: ParseArgsOptionsConfig = {
  ...Object.fromEntries(
    SETTINGS.map((s) => [s.flag, { type: s.kind === "switch" ? "boolean" as const : "string" as const }]),
  ),
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
};

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
  const pick = ({ flag, env: variable }: SettingSpec): Setting | undefined => {
    const fromFlag = values[flag] as string | undefined;
    const [value, source] = fromFlag !== undefined
      ? [fromFlag, `--${flag}`]
      : [variable ? env[variable] : undefined, variable ?? ""];
    return value === undefined || value.trim() === "" ? undefined : { value: value.trim(), source };
  };
  const settings = Object.fromEntries(
    SETTINGS.map((spec) => [spec.key, spec.kind === "switch" ? values[spec.flag] === true : read(spec, pick(spec))]),
  );
  const config = { ...settings, help, version } as Config;
  const queueUrl = pick(settingFor("queueUrl"));
  const dlqUrl = pick(settingFor("dlqUrl"));
  const databaseUrl = pick(settingFor("databaseUrl"));
  config.queueUrl ??= "";
  config.databaseUrl ??= "";
  if (help || version) return config;
  config.queueUrl = parseQueueUrl(queueUrl?.value, queueUrl?.source);
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

function settingFor(key: SettingKey): SettingSpec {
  return SETTINGS.find((spec) => spec.key === key)!;
}

/** A setting's value from its text, checked as its kind says; its default when absent. */
function read(spec: SettingSpec, setting: Setting | undefined): string | number | undefined {
  switch (spec.kind) {
    case "count": {
      const [min, max] = spec.range!;
      if (setting === undefined) return spec.fallback;
      return parseCount(setting.value, setting.source, min, min, max);
    }
    case "choice":
      return parseChoice(setting, spec.choices!) ?? spec.fallback;
    case "url":
      return setting?.value;
    default:
      return setting?.value ?? spec.fallback;
  }
}

/**
 * The options part of `--help`, from {@link SETTINGS}: each flag, its help wrapped, its
 * default and its variable.
 */
export function formatSettingsHelp(width = 88): string {
  const lines: string[] = [];
  const indent = " ".repeat(25);
  for (const spec of SETTINGS) {
    const head = `  --${spec.flag}${spec.value ? ` ${spec.value}` : ""}`;
    const words = [
      ...spec.help.split(" "),
      ...(spec.fallback !== undefined ? [`(default ${spec.fallback})`] : []),
      ...(spec.env ? [`[env ${spec.env}]`] : []),
    ];
    let line = head.length < indent.length - 1 ? head.padEnd(indent.length) : `${head}\n${indent}`;
    let used = line.length - line.lastIndexOf("\n") - 1;
    for (const word of words) {
      if (used + word.length > width && used > indent.length) {
        line += `\n${indent}`;
        used = indent.length;
      } else if (used > indent.length) {
        line += " ";
        used++;
      }
      line += word;
      used += word.length;
    }
    lines.push(line);
  }
  return lines.join("\n");
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

/** One of a few words, or undefined when not set. */
function parseChoice<T extends string>(setting: Setting | undefined, choices: readonly T[]): T | undefined {
  if (setting === undefined) return undefined;
  if (!(choices as readonly string[]).includes(setting.value)) {
    throw new ConfigError(`${setting.source} must be one of ${choices.join(", ")}, got "${setting.value}"`);
  }
  return setting.value as T;
}
