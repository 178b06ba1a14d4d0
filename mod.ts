/**
 * Consume user-login events from an AWS SQS queue, validate them, mask their PII
 * (`ip`, `device_id`) with a pluggable strategy and load them into Postgres
 * (`user_logins`) through Slonik.
 *
 * ```sh
 * MASK_HMAC_KEY=$(openssl rand -hex 32) AWS_REGION=us-east-1 \
 *   npx tsx mod.ts --queue-url https://sqs.us-east-1.amazonaws.com/123456789012/login-queue \
 *                  --dlq-url https://sqs.us-east-1.amazonaws.com/123456789012/login-dlq \
 *                  --database-url postgres://loader@db/analytics --drain
 * ```
 *
 * Data flows one way: receive -> decode + validate -> mask -> batch -> insert (one
 * transaction, with the SQS message ids) -> delete from SQS. A message leaves the queue
 * only after its row is committed or it has been written to the dead-letter queue.
 *
 * The file reads in that order: configuration, schema, strategies, logging, the Postgres
 * sink, the SQS source, the pipeline, and the command line last.
 *
 * @module
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { Buffer } from "node:buffer";
import { isIP } from "node:net";
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { getHeapSpaceStatistics, setFlagsFromString } from "node:v8";
import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  type Message,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  SQSClient,
  type SQSClientConfig,
} from "@aws-sdk/client-sqs";
import {
  FormatRegistry, Kind, type Static, type TInteger, type TObject, type TOptional, type TSchema, type TString, Type,
  TypeRegistry, type TUnsafe,
} from "@sinclair/typebox";
import { TypeCompiler } from "@sinclair/typebox/compiler";
import {
  createPool,
  type DatabasePool,
  type DatabaseTransactionConnection,
  type DriverClient,
  type DriverFactory,
  type Interceptor,
  type QuerySqlToken,
  SchemaValidationError,
  sql,
  type ValueExpression,
} from "slonik";
import { createPgDriverFactory } from "@slonik/pg-driver";
import type { StandardSchemaV1 } from "@standard-schema/spec";

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/** This release; package.json and deno.json carry the same (a test holds them together). */
export const VERSION = "0.1.0";

/** Exit code for a usage or configuration error (wrong flag, missing key). */
export const EXIT_USAGE = 2;
/** Exit code for a runtime failure (unreachable service, missing permission). */
export const EXIT_FAILURE = 1;
/** Exit code for a second SIGINT/SIGTERM during a stop: exit at once, as shells expect of Ctrl-C. */
export const EXIT_SECOND_SIGNAL = 130;

export const DEFAULT_STRATEGY = "hmac";
export const DEFAULT_BATCH_SIZE = 500;
export const DEFAULT_CONCURRENCY = 16;
/**
 * How long a stop waits for what is in flight before it abandons it and hands it back.
 * Orchestrators must allow more: compose's `stop_grace_period` and Kubernetes'
 * `terminationGracePeriodSeconds` (both 30 s by default) must exceed it by `STOP_MARGIN_SECONDS`.
 */
export const DEFAULT_STOP_GRACE_SECONDS = 20;
/** After the grace, a stop needs at most this long to abandon its calls, release and exit. */
export const STOP_MARGIN_SECONDS = 5;
/** A batch not committed this long after it was formed is abandoned and its messages released. */
export const DEFAULT_BATCH_DEADLINE_SECONDS = 60;
/**
 * Message bodies held in flight at most, in MiB. A receive of SQS's largest bodies (10 of
 * 1 MiB) passes through several copies on its way in (bytes, text, parsed, checked), so the
 * process's peak is a multiple of this: 16 kept it near 240 MB with 1 MiB bodies (8: 230,
 * 32: 300), measured with `npm run bench -- --phases large`.
 */
export const DEFAULT_MAX_IN_FLIGHT_MB = 16;
/** SQS hands out at most 10 messages per receive and takes at most 10 entries per batch call. */
export const SQS_MAX_BATCH = 10;

/** A mistake in how the tool was invoked: the message says what is wrong and how to fix it. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** A failure the tool cannot recover from by waiting: the message says what to do about it. */
export class FatalError extends Error {
  override name = "FatalError";
}

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
    const [value, source] = fromFlag !== undefined ? [fromFlag, `--${flag}`] : [variable ? env[variable] : undefined, variable ?? ""];
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
    metricsPort: optionalCount(pick("metrics-port", "METRICS_PORT"), 1, 65_535),
    metricsHost: pick("metrics-host", "METRICS_HOST")?.value,
    stopGraceSeconds: count(pick("stop-grace", "STOP_GRACE_SECONDS"), DEFAULT_STOP_GRACE_SECONDS, 0, 3_600),
    batchDeadlineSeconds: count(pick("batch-deadline", "BATCH_DEADLINE_SECONDS"), DEFAULT_BATCH_DEADLINE_SECONDS, 1, 86_400),
    maxInFlightMb: count(pick("max-in-flight-mb", "MAX_IN_FLIGHT_MB"), DEFAULT_MAX_IN_FLIGHT_MB, 1, 65_536),
    help,
    version,
  };
  if (help || version) return config;
  parseQueueUrl(queueUrl?.value, queueUrl?.source);
  if (dlqUrl) checkUrl(dlqUrl.value, dlqUrl.source, ["http:", "https:"]);
  if (dlqUrl && dlqUrl.value === queueUrl?.value) {
    throw new ConfigError(`${dlqUrl.source} is the same queue as ${queueUrl.source}: invalid messages would come straight back`);
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
  argv: readonly string[], options: ParseArgsOptionsConfig,
): Record<string, string | boolean | (string | boolean)[] | undefined> {
  try {
    return parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }).values;
  } catch (error) {
    // node's messages are long and mention internals; keep the first sentence, which the user acts on.
    const message = error instanceof Error ? error.message.split("\n")[0]!.split(". ")[0]!.replace(/\.$/, "") : String(error);
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
export function parseCount(raw: string | undefined, source: string, fallback: number, min: number, max: number): number {
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
    `${encodeURIComponent(name)}=${SECRET_PARAMETER.test(name) ? "***" : encodeURIComponent(value)}`);
  url.search = "";
  return url.toString() + (query.length > 0 ? `?${query.join("&")}` : "");
}

// ---------------------------------------------------------------------------------------
// Schema: one TypeBox schema for the message, one for the row, built from the same parts
// ---------------------------------------------------------------------------------------

FormatRegistry.Set("ip", (value) => isIP(value) !== 0);

/** The limits of a text column: `varchar(n)` counts characters (code points), not UTF-16 units. */
interface TextLimits {
  minChars: number;
  maxChars: number;
  nullable?: boolean;
}
const TEXT_KIND = "LoginText";
TypeRegistry.Set<TextLimits>(TEXT_KIND, (schema, value) => textProblem(value, schema) === undefined);

/** Text of `minChars`-`maxChars` characters, well-formed; `null` too when `nullable`. */
function Text<T extends string | null = string>(limits: TextLimits): TUnsafe<T> {
  return Type.Unsafe<T>({ [Kind]: TEXT_KIND, type: limits.nullable ? ["string", "null"] : "string", ...limits });
}

/** Why a value is not text within the limits, or undefined when it is. Names no value. */
function textProblem(value: unknown, { minChars, maxChars, nullable }: TextLimits): string | undefined {
  if (value === null && nullable) return undefined;
  if (typeof value !== "string") return nullable ? "expected a string or null" : "expected a string";
  // An unpaired surrogate becomes U+FFFD on its way to Postgres and to the hash, so two
  // different values would be stored and masked alike.
  if (!value.isWellFormed()) return "not valid Unicode (an unpaired surrogate)";
  // A string has at least half as many characters as UTF-16 units, and at most as many:
  // count them only when that decides.
  const chars = value.length <= maxChars && value.length >= 2 * minChars ? value.length : codePointCount(value);
  if (chars < minChars) return `at least ${minChars} character${minChars === 1 ? "" : "s"}`;
  if (chars > maxChars) return `at most ${maxChars} characters`;
  return undefined;
}

function codePointCount(text: string): number {
  let count = 0;
  for (const _ of text) count++;
  return count;
}

/**
 * An IP address as one text per address, so that equal addresses mask equal: IPv6 as
 * RFC 5952 writes it (lowercase, no leading zeros, the first longest run of zero groups as
 * `::`), an IPv4-mapped address (`::ffff:203.0.113.9`) as the IPv4 address it maps, and a
 * dotted IPv4 address unchanged. A zone (`%eth0`) is kept as written.
 *
 * @param ip an address `net.isIP` accepts
 * @example
 * ```ts
 * canonicalIp("2001:DB8::ABCD"); // "2001:db8::abcd"
 * canonicalIp("::ffff:203.0.113.9"); // "203.0.113.9"
 * ```
 */
export function canonicalIp(ip: string): string {
  // Dotted IPv4 has one form: net.isIP takes no leading zeros, hex or short forms.
  if (!ip.includes(":")) return ip;
  const zoneAt = ip.indexOf("%");
  const address = zoneAt === -1 ? ip : ip.slice(0, zoneAt);
  // The URL standard serialises an IPv6 host exactly by RFC 5952's rules.
  const text = new URL(`http://[${address}]/`).hostname.slice(1, -1);
  const mapped = zoneAt === -1 ? /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(text) : null;
  if (!mapped) return zoneAt === -1 ? text : text + ip.slice(zoneAt);
  const [high, low] = [Number.parseInt(mapped[1]!, 16), Number.parseInt(mapped[2]!, 16)];
  return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`;
}

/** `user_logins` column limits: the table is a contract, the schema enforces it. */
const UserId: TUnsafe<string> = Text({ minChars: 1, maxChars: 128 });
const DeviceType: TUnsafe<string> = Text({ minChars: 1, maxChars: 32 });
const Locale: TUnsafe<string | null> = Text<string | null>({ minChars: 0, maxChars: 32, nullable: true });
const APP_VERSION_PATTERN = "^\\d{1,2}\\.\\d{1,2}\\.\\d{1,2}$";

/** A login event as it arrives on the queue. Unknown extra fields are ignored. */
export const LoginMessage: TObject<{
  user_id: TUnsafe<string>;
  app_version: TString;
  device_type: TUnsafe<string>;
  ip: TString;
  locale: TOptional<TUnsafe<string | null>>;
  device_id: TUnsafe<string>;
}> = Type.Object({
  user_id: UserId,
  app_version: Type.String({ pattern: APP_VERSION_PATTERN, description: '"M.m.p", each part 0-99' }),
  device_type: DeviceType,
  ip: Type.String({ format: "ip", maxLength: 64 }),
  locale: Type.Optional(Locale),
  device_id: Text({ minChars: 1, maxChars: 256 }),
});
export type LoginMessage = Static<typeof LoginMessage>;

/** A row of `user_logins`, as written and as read back. */
export const UserLoginRow: TObject<{
  user_id: TUnsafe<string>;
  device_type: TUnsafe<string>;
  masked_ip: TUnsafe<string>;
  masked_device_id: TUnsafe<string>;
  locale: TUnsafe<string | null>;
  app_version: TInteger;
  create_date: TString;
}> = Type.Object({
  user_id: UserId,
  device_type: DeviceType,
  masked_ip: Text({ minChars: 1, maxChars: 256 }),
  masked_device_id: Text({ minChars: 1, maxChars: 256 }),
  locale: Locale,
  app_version: Type.Integer({ minimum: 0, maximum: 999_999 }),
  create_date: Type.String({ pattern: "^\\d{4}-\\d{2}-\\d{2}$" }),
});
export type UserLoginRow = Static<typeof UserLoginRow>;

/** What one batch's insert reports: how many of its rows were new. */
const InsertedCount = Type.Object({ inserted: Type.Integer({ minimum: 0 }) });
const InsertedIds = Type.Object({ inserted: Type.Integer({ minimum: 0 }), fresh_ids: Type.Array(Type.String()) });

const checkLoginMessage = TypeCompiler.Compile(LoginMessage);

/**
 * Adapt a TypeBox schema to Standard Schema, which Slonik's `sql.type` takes.
 * Issues carry the path and rule, never the offending value.
 *
 * @param schema a TypeBox schema
 * @returns a Standard Schema validating the same shape
 */
export function toStandardSchema<T extends TSchema>(schema: T): StandardSchemaV1<Static<T>, Static<T>> {
  const check = TypeCompiler.Compile(schema);
  return {
    "~standard": {
      version: 1,
      vendor: "typebox",
      validate(value) {
        if (check.Check(value)) return { value: value as Static<T> };
        return {
          issues: [...check.Errors(value)].map((error) => ({
            message: error.message,
            path: error.path.split("/").filter(Boolean),
          })),
        };
      },
    },
  };
}

/** Typed SQL: Slonik checks every row these queries return against the schema. */
export const sqlUserLoginRow: (
  template: TemplateStringsArray, ...values: ValueExpression[]
) => QuerySqlToken<StandardSchemaV1<UserLoginRow, UserLoginRow>> = sql.type(toStandardSchema(UserLoginRow));
const sqlInsertedCount = sql.type(toStandardSchema(InsertedCount));
const sqlInsertedIds = sql.type(toStandardSchema(InsertedIds));

/**
 * Encode "M.m.p" (each part 0-99) as M*10000 + m*100 + p, which sorts like the version.
 *
 * @param version e.g. "2.3.4"
 * @returns e.g. 20304, or `undefined` if the version is not "M.m.p" with parts 0-99
 */
export function encodeAppVersion(version: string): number | undefined {
  const match = /^(\d{1,2})\.(\d{1,2})\.(\d{1,2})$/.exec(version);
  if (!match) return undefined;
  return Number(match[1]) * 10_000 + Number(match[2]) * 100 + Number(match[3]);
}

/**
 * Read back an encoded app version.
 *
 * @param encoded e.g. 20304
 * @returns e.g. "2.3.4"
 */
export function decodeAppVersion(encoded: number): string {
  return `${Math.floor(encoded / 10_000)}.${Math.floor(encoded / 100) % 100}.${encoded % 100}`;
}

/** A validated login, with the SQS facts the row needs. Holds raw PII: never log it. */
export interface LoginRecord {
  messageId: string;
  message: LoginMessage;
  appVersion: number;
  createDate: string;
}

/** Decoding's outcome is data: a record, or the reason the message can never be loaded. */
export type Decoded = { ok: true; record: LoginRecord } | { ok: false; reason: string };

/**
 * Decode and validate one SQS message. Reasons name the field and the rule, never a value.
 *
 * @param message an SQS message received with the `SentTimestamp` attribute
 * @returns the record, or why it is invalid
 */
export function decodeMessage(message: Message): Decoded {
  const sentTimestamp = Number(message.Attributes?.SentTimestamp);
  if (!message.MessageId) return { ok: false, reason: "message has no MessageId" };
  if (!Number.isFinite(sentTimestamp)) return { ok: false, reason: "message has no SentTimestamp attribute" };
  let body: unknown;
  try {
    body = JSON.parse(message.Body ?? "");
  } catch {
    // V8's parse errors quote the body, so the reason must not include them.
    return { ok: false, reason: "body is not valid JSON" };
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    return { ok: false, reason: "body is not a JSON object" };
  }
  if (!checkLoginMessage.Check(body)) {
    return { ok: false, reason: describeSchemaErrors(body) };
  }
  const { user_id, app_version, device_type, ip, locale, device_id } = body;
  return {
    ok: true,
    record: {
      messageId: message.MessageId,
      // The known fields only (an unknown one may be large, and is not kept), and the
      // address in its one canonical text.
      message: { user_id, app_version, device_type, ip: canonicalIp(ip), locale: locale ?? null, device_id },
      appVersion: encodeAppVersion(app_version)!,
      createDate: new Date(sentTimestamp).toISOString().slice(0, 10),
    },
  };
}

function describeSchemaErrors(body: unknown): string {
  const seen = new Set<string>();
  for (const error of checkLoginMessage.Errors(body)) {
    const field = error.path.replace(/^\//, "") || "(body)";
    const rule = error.schema[Kind] === TEXT_KIND
      ? textProblem(error.value, error.schema as unknown as TextLimits)
      : error.schema.description ?? error.message;
    const missing = error.value === undefined;
    seen.add(missing ? `${field}: required` : `${field}: ${rule}`);
    if (seen.size === 3) break;
  }
  return [...seen].join("; ");
}

// ---------------------------------------------------------------------------------------
// Masking strategies
// ---------------------------------------------------------------------------------------

/** The PII fields of a login message. */
export const PII_FIELDS = ["ip", "device_id"] as const;
export type PiiField = (typeof PII_FIELDS)[number];

/** One PII value with its mask, handed to a strategy that keeps something beside the rows. */
export interface MaskedValue {
  field: PiiField;
  value: string;
  masked: string;
}

/**
 * A masking strategy. `mask` must be deterministic (equal inputs give equal outputs) and
 * its output must not reveal the input.
 */
export interface MaskStrategy {
  readonly name: string;
  mask(value: string, field: PiiField): string | Promise<string>;
  /**
   * Fields whose mask is a keyed permutation of the value's own format (`ipcrypt-pfx` maps
   * an IPv4 address to an IPv4 address). Such a mask equals or contains its input by chance
   * for a few addresses under any key, and that is a ciphertext, not a leak: for these
   * fields the tool checks only that the mask fits the column.
   */
  readonly formatPreserving?: readonly PiiField[];
  /** Create what the strategy keeps in Postgres (run once at start, may be run again). */
  setup?(pool: DatabasePool): Promise<void>;
  /**
   * Write what the strategy keeps beside the rows, inside the batch's own transaction. It is
   * handed the values of the messages new to the table only, never a redelivery's: what an
   * erasure removed since must not come back. It may return a function, called once that
   * transaction has committed (never after a rollback), to remember what is now written.
   */
  persist?(tx: DatabaseTransactionConnection, values: readonly MaskedValue[]): Promise<void | (() => void)>;
}

/** What a strategy receives when it is created; it checks its options once, here. */
export interface StrategyOptions {
  env: Record<string, string | undefined>;
}

/** A strategy plugin: the shape of `strategies/*.ts` and of a user's own module. */
export interface StrategyModule {
  create(options: StrategyOptions): MaskStrategy | Promise<MaskStrategy>;
}

const BUILT_IN_STRATEGIES: Record<string, () => Promise<StrategyModule>> = {
  hmac: () => import("./strategies/hmac.ts"),
  sha256: () => import("./strategies/sha256.ts"),
  vault: () => import("./strategies/vault.ts"),
  ipcrypt: () => import("./strategies/ipcrypt.ts"),
  "ipcrypt-pfx": () => import("./strategies/ipcrypt-pfx.ts"),
};

/** Names of the built-in strategies, for help and error text. */
export const STRATEGY_NAMES: string[] = Object.keys(BUILT_IN_STRATEGIES);

/**
 * Load a strategy by built-in name or by module path, and create it.
 *
 * @param nameOrPath a built-in name (`STRATEGY_NAMES`), or a path to a module exporting `create`
 * @param options passed to the strategy's `create`
 * @returns the ready strategy
 * @throws {ConfigError} for an unknown name, a module without `create`, or bad options
 */
export async function loadStrategy(nameOrPath: string, options: StrategyOptions): Promise<MaskStrategy> {
  const isPath = /[\\/]|\.[cm]?[jt]s$/.test(nameOrPath);
  let module: Partial<StrategyModule> & { default?: Partial<StrategyModule> };
  if (!isPath) {
    const load = BUILT_IN_STRATEGIES[nameOrPath];
    if (!load) {
      throw new ConfigError(
        `Unknown strategy "${nameOrPath}": use one of ${STRATEGY_NAMES.join(", ")}, or a path to your own module`,
      );
    }
    module = await load();
  } else {
    const { pathToFileURL } = await import("node:url");
    const { resolve } = await import("node:path");
    try {
      module = await import(pathToFileURL(resolve(nameOrPath)).href);
    } catch (error) {
      const reason = error instanceof Error ? error.message.split("\n")[0] : String(error);
      throw new ConfigError(`Cannot load strategy module ${nameOrPath}: ${reason}`);
    }
  }
  const create = module.create ?? module.default?.create;
  if (typeof create !== "function") {
    throw new ConfigError(
      `Strategy module ${nameOrPath} does not export create(options): see strategies/hmac.ts for the interface`,
    );
  }
  let strategy: MaskStrategy;
  try {
    strategy = await create({ env: options.env });
  } catch (error) {
    throw new ConfigError(error instanceof Error ? error.message : String(error));
  }
  if (!strategy || typeof strategy.mask !== "function" || typeof strategy.name !== "string") {
    throw new ConfigError(`Strategy module ${nameOrPath}: create() must return { name, mask(value, field) }`);
  }
  return strategy;
}

/**
 * Mask one value and refuse output that would leak it: a strategy that returns the input,
 * or something containing it, or nothing that fits the column, is a broken strategy
 * (except that a format-preserving mask may equal or contain its input by chance).
 * A strategy that answers at once is not awaited: two awaits per message showed in the profile.
 */
function maskValue(strategy: MaskStrategy, value: string, field: PiiField): string | Promise<string> {
  let masked: unknown;
  try {
    masked = strategy.mask(value, field);
  } catch (error) {
    throw maskFailure(strategy, value, field, error);
  }
  // Any thenable, as `await` took it: a strategy may return another library's promise.
  if (typeof (masked as PromiseLike<unknown> | null)?.then === "function") {
    return Promise.resolve(masked).then((m) => checkMasked(strategy, value, field, m), (error) => {
      throw maskFailure(strategy, value, field, error);
    });
  }
  return checkMasked(strategy, value, field, masked);
}

/** A strategy's error may name the value it was given: redact it before anyone logs it. */
function maskFailure(strategy: MaskStrategy, value: string, field: PiiField, error: unknown): FatalError {
  return new FatalError(`Strategy ${strategy.name} failed to mask ${field}: ${redactValues(firstLineScrubbed(error), [value])}`);
}

function checkMasked(strategy: MaskStrategy, value: string, field: PiiField, masked: unknown): string {
  if (typeof masked !== "string" || textProblem(masked, { minChars: 1, maxChars: 256 }) !== undefined) {
    throw new FatalError(`Strategy ${strategy.name} returned no string of 1-256 characters for ${field}`);
  }
  if (strategy.formatPreserving?.includes(field)) return masked;
  // Short inputs can occur inside a hex digest by chance; long ones cannot.
  if (masked === value || (value.length >= 8 && masked.includes(value))) {
    throw new FatalError(`Strategy ${strategy.name} returned output containing the raw ${field}: refusing to write it`);
  }
  return masked;
}

// ---------------------------------------------------------------------------------------
// Logging: JSON lines, or readable lines in a terminal. Never a message body or raw PII.
// ---------------------------------------------------------------------------------------

export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";
const LOG_LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 99 };

function parseLogLevel(setting: Setting | undefined): LogLevel {
  if (setting === undefined) return "info";
  if (!(setting.value in LOG_LEVELS)) {
    throw new ConfigError(`${setting.source} must be one of ${Object.keys(LOG_LEVELS).join(", ")}, got "${setting.value}"`);
  }
  return setting.value as LogLevel;
}

export type LogFields = Record<string, string | number | boolean | undefined>;
export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

/**
 * A logger writing one line per event: JSON when `pretty` is false (for machines), or
 * `time LEVEL message key=value` when true (for a terminal).
 */
export function createLogger(
  level: LogLevel = "info",
  write: (line: string) => void = (line) => process.stderr.write(line + "\n"),
  pretty = false,
): Logger {
  const threshold = LOG_LEVELS[level];
  const emit = (lvl: Exclude<LogLevel, "silent">, message: string, fields: LogFields = {}) => {
    if (LOG_LEVELS[lvl] < threshold) return;
    const time = new Date().toISOString();
    if (pretty) {
      const extras = Object.entries(fields)
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => `${k}=${typeof v === "string" && /\s/.test(v) ? JSON.stringify(v) : v}`)
        .join(" ");
      write(`${time.slice(11, 23)} ${lvl.toUpperCase().padEnd(5)} ${message}${extras ? " " + extras : ""}`);
    } else {
      write(JSON.stringify({ time, level: lvl, msg: message, ...fields }));
    }
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
  };
}

// ---------------------------------------------------------------------------------------
// Postgres sink
// ---------------------------------------------------------------------------------------

/** The table this tool fills: a contract, created exactly so when absent, never altered. */
export const USER_LOGINS_DDL: QuerySqlToken = sql.unsafe`
  CREATE TABLE IF NOT EXISTS user_logins(
    user_id varchar(128), device_type varchar(32), masked_ip varchar(256),
    masked_device_id varchar(256), locale varchar(32), app_version integer, create_date date)`;
const USER_LOGINS_COLUMNS = [
  "user_id", "device_type", "masked_ip", "masked_device_id", "locale", "app_version", "create_date",
] as const;

/** The tool's own table: which SQS messages already have their row, so redelivery adds none. */
export const PROCESSED_TABLE = "user_logins_sqs_messages";
/** SQS keeps a message at most 14 days, so an id older than that can never come back. */
const PROCESSED_RETENTION_DAYS = 15;
/**
 * The one way to remove ids from the table: those older than the retention, and nothing
 * else, whoever calls it (SECURITY DEFINER), so a loading role needs no DELETE.
 */
export const PRUNE_FUNCTION = `${PROCESSED_TABLE}_prune`;
const LedgerState = Type.Object({ schema: Type.String(), may_create_prune: Type.Boolean() });
const sqlLedgerState = sql.type(toStandardSchema(LedgerState));

/** Checks returned rows against the `sql.type` schema, since Slonik leaves that to interceptors. */
const resultParserInterceptor: Interceptor = {
  name: "standard-schema-result-parser",
  transformRowAsync: async (context, query, row) => {
    if (!context.resultParser) return row;
    const result = await context.resultParser["~standard"].validate(row);
    if (result.issues) throw new SchemaValidationError(query, row, result.issues);
    return result.value as typeof row;
  },
};

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
/** Pruning old ids may take minutes on a big table; it is housekeeping, not a batch. */
const PRUNE_TIMEOUT_MS = 5 * 60_000;

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
export class DatabaseCallAbandonedError extends Error {
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
    const driver = await withTimeout(factory(input), DATABASE_CALL_DEADLINE_MS,
      () => new DatabaseCallAbandonedError(`no answer from Postgres within ${DATABASE_CALL_DEADLINE_MS / 1000} s`));
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
            const timer = setTimeout(() => reject(abandon(`no answer from Postgres within ${deadlineMs / 1000} s`)), deadlineMs);
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
    resetConnection: ({ query }) => withTimeout(query("DISCARD ALL"), DATABASE_CALL_DEADLINE_MS,
      () => new DatabaseCallAbandonedError("no answer to DISCARD ALL")),
    captureStackTrace: false,
  });
}

/**
 * Create `user_logins` if absent (never alter it) and the tool's own table, then check the
 * current role may insert. Safe to run from many consumers at once.
 *
 * @throws {FatalError} with a fix when a table or permission is missing
 */
export async function ensureSchema(pool: DatabasePool): Promise<void> {
  await pool.transaction(async (tx) => {
    // Concurrent CREATE TABLE IF NOT EXISTS can still collide in pg_type; serialise starters.
    await tx.query(sql.unsafe`SELECT pg_advisory_xact_lock(hashtext('sqs-login-masker schema'))`);
    const existing = await tx.maybeOneFirst(sql.unsafe`SELECT to_regclass('user_logins')::text`);
    if (existing === null) await tx.query(USER_LOGINS_DDL);
    const columns = await tx.anyFirst(sql.unsafe`
      SELECT attname::text FROM pg_attribute
      WHERE attrelid = 'user_logins'::regclass AND attnum > 0 AND NOT attisdropped`);
    const missing = USER_LOGINS_COLUMNS.filter((column) => !columns.includes(column));
    if (missing.length > 0) {
      throw new FatalError(`Table user_logins lacks column(s) ${missing.join(", ")}: it is not the user_logins this tool loads`);
    }
    // Create only what is missing: CREATE ... IF NOT EXISTS still needs CREATE on the
    // schema, which a loading role that was handed existing tables need not have.
    if (await tx.maybeOneFirst(sql.unsafe`SELECT to_regclass(${PROCESSED_TABLE})::text`) === null) {
      await tx.query(sql.unsafe`
        CREATE TABLE ${sql.identifier([PROCESSED_TABLE])}(
          message_id varchar(128) PRIMARY KEY,
          processed_at timestamptz NOT NULL DEFAULT now())`);
      // BRIN: ids arrive in time order, so block ranges serve the retention delete, and
      // unlike a B-tree it costs next to nothing per inserted row.
      await tx.query(sql.unsafe`
        CREATE INDEX ${sql.identifier([PROCESSED_TABLE + "_processed_at"])}
        ON ${sql.identifier([PROCESSED_TABLE])} USING brin (processed_at)`);
    }
    const canInsert = await tx.oneFirst(sql.unsafe`
      SELECT has_table_privilege('user_logins', 'INSERT')
         AND has_table_privilege(${PROCESSED_TABLE}, 'INSERT,SELECT')`);
    if (!canInsert) {
      const role = await tx.oneFirst(sql.unsafe`SELECT current_user::text`);
      throw new FatalError(
        `Role ${role} may not write user_logins or ${PROCESSED_TABLE}: GRANT INSERT ON user_logins TO ${role}; GRANT INSERT, SELECT ON ${PROCESSED_TABLE} TO ${role}; GRANT EXECUTE ON FUNCTION ${PRUNE_FUNCTION}() TO ${role}`,
      );
    }
    await pruneProcessed(tx);
  });
}

/** Remove ids past the retention through the prune function, creating it if absent and this role may. */
async function pruneProcessed(tx: DatabaseTransactionConnection): Promise<void> {
  const ledger = await tx.one(sqlLedgerState`
    SELECT n.nspname::text AS schema,
           to_regprocedure(format('%I.%I()', n.nspname, ${PRUNE_FUNCTION}::text)) IS NULL
             AND has_table_privilege(c.oid, 'DELETE') AND has_schema_privilege(n.oid, 'CREATE') AS may_create_prune
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ${PROCESSED_TABLE}::regclass`);
  const prune = sql.identifier([ledger.schema, PRUNE_FUNCTION]);
  if (ledger.may_create_prune) {
    await tx.query(sql.unsafe`
      CREATE FUNCTION ${prune}() RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DELETE FROM ${sql.identifier([ledger.schema, PROCESSED_TABLE])}
        WHERE processed_at < now() - make_interval(days => ${sql.literalValue(String(PROCESSED_RETENTION_DAYS))}::int) $$`);
    await tx.query(sql.unsafe`REVOKE ALL ON FUNCTION ${prune}() FROM PUBLIC`);
  }
  const mayPrune = await tx.oneFirst(sql.unsafe`
    SELECT coalesce(has_function_privilege(to_regprocedure(format('%I.%I()', ${ledger.schema}::text, ${PRUNE_FUNCTION}::text)), 'EXECUTE'), false)`);
  if (mayPrune) {
    // Housekeeping that may take minutes on a big table: its own limits, not a batch's.
    await tx.query(sql.unsafe`SELECT set_config('statement_timeout', ${String(PRUNE_TIMEOUT_MS)}, true)`);
    await withDatabaseCallLimits({ deadlineMs: PRUNE_TIMEOUT_MS + 5_000 }, () => tx.query(sql.unsafe`SELECT ${prune}()`));
  }
}

/** `promise`, or the error `onTimeout` makes if it has not settled within `ms`. */
function withTimeout<T>(promise: Promise<T>, ms: number, onTimeout = () => new Error(`no answer within ${ms} ms`)): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** How a failed database call should be handled: wait and retry, isolate the row, or stop. */
export type DatabaseErrorKind = "transient" | "row" | "fatal";

const TRANSIENT_CODE_PREFIXES = ["08", "53", "57P", "40", "55P03", "58"];
const ROW_CODE_PREFIXES = ["22", "23", "54"];
const TRANSIENT_NETWORK_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN", "ENOTFOUND"]);
const TRANSIENT_ERROR_NAMES = new Set([
  "ConnectionError", "BackendTerminatedError", "BackendTerminatedUnexpectedlyError", "StatementTimeoutError", "IdleTransactionTimeoutError",
  "DatabaseCallAbandonedError",
]);

function errorChain(error: unknown): Array<Error & { code?: string }> {
  const chain: Array<Error & { code?: string }> = [];
  for (let e = error; e instanceof Error && chain.length < 8; e = (e as Error).cause) chain.push(e);
  return chain;
}

/**
 * The one place that decides what a database error means.
 *
 * @returns "transient" (connection, shutdown, contention: wait and retry), "row" (the data
 *   of some row was rejected: isolate it), or "fatal" (permission, missing table: stop)
 */
export function classifyDatabaseError(error: unknown): DatabaseErrorKind {
  for (const e of errorChain(error)) {
    const code = typeof e.code === "string" ? e.code : undefined;
    if (code && TRANSIENT_NETWORK_CODES.has(code)) return "transient";
    if (code && TRANSIENT_CODE_PREFIXES.some((p) => code.startsWith(p))) return "transient";
    if (code && ROW_CODE_PREFIXES.some((p) => code.startsWith(p))) return "row";
    if (TRANSIENT_ERROR_NAMES.has(e.name)) return "transient";
    if (e.name === "InvalidInputError") return "row";
    if (/connection terminated|timeout exceeded when trying to connect|connect ECONNREFUSED|Connection refused/i.test(e.message)) {
      return "transient";
    }
  }
  return "fatal";
}

/**
 * A database error as one line that holds no data: Postgres quotes values in its messages
 * and puts them in DETAIL, so quoted text is elided and DETAIL is never read.
 */
export function describeDatabaseError(error: unknown): string {
  const chain = errorChain(error);
  const withCode = chain.find((e) => typeof e.code === "string") as (Error & { code: string; constraint?: string; column?: string }) | undefined;
  const source = withCode ?? chain[0];
  if (!source) return String(error);
  const message = scrubQuoted(source.message.split("\n")[0]!);
  const parts = [withCode ? `${withCode.code} ${message}` : message];
  if (withCode?.constraint) parts.push(`constraint ${withCode.constraint}`);
  if (withCode?.column) parts.push(`column ${withCode.column}`);
  return parts.join(", ");
}

/** An error's first line with quoted text elided, for a message that may quote data. */
function firstLineScrubbed(error: unknown): string {
  return scrubQuoted((error instanceof Error ? error.message : String(error)).split("\n")[0]!);
}

function scrubQuoted(text: string): string {
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

/** A record masked and ready for its row. */
export interface MaskedRecord {
  record: LoginRecord;
  row: UserLoginRow;
  values: MaskedValue[];
}

/**
 * Mask a record with the strategy.
 *
 * @returns the row for `user_logins` and the masked values (for strategies that persist)
 */
export function maskRecord(strategy: MaskStrategy, record: LoginRecord): MaskedRecord | Promise<MaskedRecord> {
  const { ip, device_id } = record.message;
  const maskedIp = maskValue(strategy, ip, "ip");
  if (typeof maskedIp !== "string") {
    return maskedIp.then(async (m) => toMaskedRecord(record, m, await maskValue(strategy, device_id, "device_id")));
  }
  const maskedDeviceId = maskValue(strategy, device_id, "device_id");
  if (typeof maskedDeviceId !== "string") return maskedDeviceId.then((m) => toMaskedRecord(record, maskedIp, m));
  return toMaskedRecord(record, maskedIp, maskedDeviceId);
}

function toMaskedRecord(record: LoginRecord, maskedIp: string, maskedDeviceId: string): MaskedRecord {
  const { message } = record;
  return {
    record,
    row: {
      user_id: message.user_id,
      device_type: message.device_type,
      masked_ip: maskedIp,
      masked_device_id: maskedDeviceId,
      locale: message.locale ?? null,
      app_version: record.appVersion,
      create_date: record.createDate,
    },
    values: [
      { field: "ip", value: message.ip, masked: maskedIp },
      { field: "device_id", value: message.device_id, masked: maskedDeviceId },
    ],
  };
}

/** What `insertRows` did, and what to run once its transaction has committed. */
export interface InsertedRows {
  inserted: number;
  /** The strategy's after-commit callback from `persist`, if it gave one. */
  onCommit?: () => void;
}

/**
 * Insert the rows of messages not processed before, and record their ids, in the given
 * transaction, in one statement: the ids that were new select the rows that go in. Nothing
 * comes back per row; the profile showed parsing the new ids row by row as a cost. A
 * strategy that persists gets the new ids back as one array, and the values of those
 * messages only.
 *
 * @returns how many rows were inserted (the rest were already loaded)
 */
export async function insertRows(
  tx: DatabaseTransactionConnection,
  strategy: MaskStrategy,
  batch: readonly MaskedRecord[],
): Promise<InsertedRows> {
  if (batch.length === 0) return { inserted: 0 };
  const tuples = batch.map(({ record, row }) => [
    record.messageId, row.user_id, row.device_type, row.masked_ip, row.masked_device_id, row.locale, row.app_version, row.create_date,
  ]);
  const columns = sql.join(USER_LOGINS_COLUMNS.map((c) => sql.identifier([c])), sql.fragment`, `);
  const rows = sql.fragment`
    WITH batch AS (
      SELECT * FROM ${sql.unnest(tuples, ["text", "text", "text", "text", "text", "text", "int4", "date"])}
        AS t(message_id, ${columns})
    ), fresh AS (
      INSERT INTO ${sql.identifier([PROCESSED_TABLE])} (message_id)
      SELECT message_id FROM batch
      ON CONFLICT (message_id) DO NOTHING
      RETURNING message_id
    ), inserted AS (
      INSERT INTO user_logins (${columns})
      SELECT ${columns} FROM batch WHERE message_id IN (SELECT message_id FROM fresh)
      RETURNING 1
    )`;
  if (!strategy.persist) return { inserted: await tx.oneFirst(sqlInsertedCount`${rows} SELECT count(*)::int AS inserted FROM inserted`) };
  const { inserted, fresh_ids: freshIds } = await tx.one(sqlInsertedIds`
    ${rows} SELECT (SELECT count(*)::int FROM inserted) AS inserted, ARRAY(SELECT message_id::text FROM fresh) AS fresh_ids`);
  const fresh = new Set(freshIds);
  const values = batch.filter((m) => fresh.has(m.record.messageId)).flatMap((m) => m.values);
  if (values.length === 0) return { inserted };
  try {
    return { inserted, onCommit: await strategy.persist(tx, values) ?? undefined };
  } catch (error) {
    // Postgres' own errors go to the caller to classify (transient, row, fatal); anything
    // else is the strategy's, and may name the raw values it was handed.
    if (classifyDatabaseError(error) !== "fatal" || errorChain(error).some((e) => typeof e.code === "string")) throw error;
    throw new FatalError(`Strategy ${strategy.name} failed to persist: ${redactValues(firstLineScrubbed(error), values.map((v) => v.value))}`);
  }
}

/** The outcome of writing one batch: what committed, and what Postgres refused and why. */
export interface WriteOutcome {
  inserted: number;
  duplicates: number;
  committed: MaskedRecord[];
  rejected: Array<{ masked: MaskedRecord; reason: string }>;
}

/**
 * Write a batch in one transaction. If Postgres rejects the data of some row, write each
 * row in its own transaction so that only the bad ones are left out; already-committed
 * rows are skipped on any retry by the processed-id table.
 *
 * @throws transient and fatal database errors, for the caller to wait on or stop for
 */
export async function writeBatch(
  pool: DatabasePool,
  strategy: MaskStrategy,
  batch: readonly MaskedRecord[],
): Promise<WriteOutcome> {
  const unique = [...new Map(batch.map((m) => [m.record.messageId, m])).values()];
  try {
    const { inserted, onCommit } = await pool.transaction((tx) => insertRows(tx, strategy, unique));
    onCommit?.();
    return { inserted, duplicates: batch.length - inserted, committed: [...batch], rejected: [] };
  } catch (error) {
    if (classifyDatabaseError(error) !== "row") throw error;
  }
  const outcome: WriteOutcome = { inserted: 0, duplicates: 0, committed: [], rejected: [] };
  const rejectedIds = new Map<string, string>();
  for (const masked of unique) {
    try {
      const { inserted, onCommit } = await pool.transaction((tx) => insertRows(tx, strategy, [masked]));
      onCommit?.();
      outcome.inserted += inserted;
    } catch (error) {
      if (classifyDatabaseError(error) !== "row") throw error;
      const { ip, device_id } = masked.record.message;
      rejectedIds.set(masked.record.messageId, redactValues(describeDatabaseError(error), [ip, device_id]));
    }
  }
  for (const masked of batch) {
    const reason = rejectedIds.get(masked.record.messageId);
    if (reason === undefined) outcome.committed.push(masked);
    else outcome.rejected.push({ masked, reason: `rejected by Postgres: ${reason}` });
  }
  outcome.duplicates = outcome.committed.length - outcome.inserted;
  return outcome;
}

// ---------------------------------------------------------------------------------------
// SQS source
// ---------------------------------------------------------------------------------------

/** SQS answers a call within this, or the call is given up (a half-open connection, a hung endpoint). */
export const SQS_CALL_DEADLINE_MS = 10_000;

/**
 * The SQS client. Region, credentials and endpoint come from the SDK's default chain;
 * nothing is invented here. The SDK sets no deadline of its own (a silent socket holds a
 * call forever): every call of the tool goes through `boundedSqsCall`.
 */
export function createSqsClient(logger: Logger = createLogger("silent")): SQSClient {
  // The SDK's info log carries request inputs and outputs, message bodies included: never
  // pass it on. Leaving `info` out (the SDK only ever calls `logger.info?.(…)`) also spares
  // it building a filtered copy of every response just to drop it, which the profile showed. Its warnings (e.g. that the queue URL's host is used as the endpoint)
  // go to our debug level; its error entries hold the input too, so keep only the command.
  const sdkLogger = {
    debug: () => {},
    warn: (...args: unknown[]) => logger.debug("aws sdk warning", { text: String(args[0]).split("\n")[0] }),
    error: (entry: unknown) => logger.debug("aws sdk error", { command: (entry as { commandName?: string })?.commandName }),
  };
  return new SQSClient({ logger: sdkLogger as unknown as NonNullable<SQSClientConfig["logger"]> });
}

/** An SQS call given up at its deadline: transient, waited out like any network fault. */
class SqsDeadlineError extends Error {
  override name = "TimeoutError";
}

/** What an SQS call is handed: the SDK's per-call options. */
export interface SqsCallOptions {
  abortSignal: AbortSignal;
}

/**
 * Make one SQS call with a deadline: past it the request is aborted (its socket destroyed)
 * and a `TimeoutError` thrown. `signal` abandons it sooner (a stop), rethrowing the abort.
 * One timer per call, which covers the SDK's own retries and the response's body too
 * (the SDK's `requestTimeout` would add timers of its own per attempt, and end at the
 * response's headers).
 *
 * @param call sends the command with the options it is given
 * @param deadlineMs a long poll's is its wait plus `SQS_CALL_DEADLINE_MS`
 * @example
 * ```ts
 * await boundedSqsCall((options) => sqs.send(new GetQueueAttributesCommand({ QueueUrl }), options));
 * ```
 */
export async function boundedSqsCall<T>(call: (options: SqsCallOptions) => Promise<T>, deadlineMs = SQS_CALL_DEADLINE_MS, signal?: AbortSignal): Promise<T> {
  const deadline = deadlineSignal(deadlineMs, signal);
  try {
    return await call({ abortSignal: deadline.signal });
  } catch (error) {
    if (deadline.expired()) throw new SqsDeadlineError(`no answer within ${deadlineMs / 1000} s`);
    throw error;
  } finally {
    deadline.clear();
  }
}

/**
 * A signal that aborts after `ms`, or when `outer` aborts, whichever comes first; `clear`
 * ends its timer, `expired` tells whether the time ran out (rather than `outer`).
 */
function deadlineSignal(ms: number, outer?: AbortSignal) {
  const controller = new AbortController();
  let expired = false;
  const timer = setTimeout(() => {
    expired = true;
    controller.abort();
  }, ms);
  const onOuterAbort = () => controller.abort(outer!.reason);
  if (outer?.aborted) onOuterAbort();
  else outer?.addEventListener("abort", onOuterAbort, { once: true });
  return {
    signal: controller.signal,
    expired: () => expired,
    clear() {
      clearTimeout(timer);
      outer?.removeEventListener("abort", onOuterAbort);
    },
  };
}

/** What the tool needs to know about a queue before it starts. */
export interface QueueInfo {
  visibilityTimeoutSeconds: number;
  /** The largest message the queue takes, body and attributes, in bytes. */
  maximumMessageSize: number;
  /** SQS's own redrive policy: after `maxReceiveCount` receives it moves a message itself. */
  redrivePolicy?: { maxReceiveCount: number; deadLetterTargetArn: string };
}

/**
 * Check that a queue is reachable and read its visibility timeout, size limit and redrive policy.
 *
 * @throws {FatalError} with the fix: region, credentials, endpoint or queue name
 */
export async function inspectQueue(client: SQSClient, queueUrl: string, flag: string): Promise<QueueInfo> {
  try {
    await client.config.region();
  } catch {
    throw new ConfigError("AWS region is not set: set AWS_REGION (or a region in your AWS profile)");
  }
  try {
    const { Attributes = {} } = await boundedSqsCall((options) => client.send(new GetQueueAttributesCommand({
      QueueUrl: queueUrl, AttributeNames: ["VisibilityTimeout", "MaximumMessageSize", "RedrivePolicy"],
    }), options));
    return {
      visibilityTimeoutSeconds: Number(Attributes.VisibilityTimeout ?? 30),
      maximumMessageSize: Number(Attributes.MaximumMessageSize ?? SQS_MAX_BATCH_BYTES),
      redrivePolicy: parseRedrivePolicy(Attributes.RedrivePolicy),
    };
  } catch (error) {
    throw new FatalError(`Cannot use ${flag} ${redactUrl(queueUrl)}: ${describeSqsError(error)}`);
  }
}

function parseRedrivePolicy(raw: string | undefined): QueueInfo["redrivePolicy"] {
  if (!raw) return undefined;
  try {
    const { maxReceiveCount, deadLetterTargetArn } = JSON.parse(raw);
    return Number(maxReceiveCount) > 0 ? { maxReceiveCount: Number(maxReceiveCount), deadLetterTargetArn: String(deadLetterTargetArn) } : undefined;
  } catch {
    return undefined;
  }
}

/** An SQS error as one line with what to check. */
export function describeSqsError(error: unknown): string {
  const e = error as Error & { Code?: string; code?: string; $metadata?: { httpStatusCode?: number } };
  const name = e?.name ?? "";
  const causeCode = errorChain(error).map((x) => x.code).find((c) => typeof c === "string");
  if (/NonExistentQueue|QueueDoesNotExist/.test(name)) return "queue does not exist (check the URL and region)";
  if (/CredentialsProviderError|InvalidClientTokenId|UnrecognizedClient|SignatureDoesNotMatch/.test(name)) {
    return `AWS credentials rejected or missing (${name}): set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE`;
  }
  if (/AccessDenied/.test(name)) return `access denied (${name}): the IAM identity needs sqs permissions on this queue`;
  if (causeCode && TRANSIENT_NETWORK_CODES.has(causeCode)) {
    const endpoint = process.env.AWS_ENDPOINT_URL;
    return `endpoint unreachable (${causeCode}): is the SQS endpoint up? (AWS_ENDPOINT_URL=${endpoint ? redactUrl(endpoint) : "unset"})`;
  }
  return `${name || "error"}: ${firstLineScrubbed(e?.message ?? error)}`;
}

/** Whether an SQS error is worth waiting out (network, throttling, 5xx, no answer by the deadline). */
export function isTransientSqsError(error: unknown): boolean {
  const e = error as Error & { $metadata?: { httpStatusCode?: number }; $retryable?: unknown };
  const status = e?.$metadata?.httpStatusCode;
  if (status !== undefined && (status >= 500 || status === 429)) return true;
  if (e?.$retryable) return true;
  if (/Throttl|RequestTimeout|TimeoutError|ServiceUnavailable|InternalError/.test(e?.name ?? "")) return true;
  return errorChain(error).some(
    (x) => (typeof x.code === "string" && TRANSIENT_NETWORK_CODES.has(x.code)) || /socket hang up|ECONNREFUSED/.test(x.message),
  );
}

/** SQS takes at most this many bytes in one message, and in one batch call (bodies and attributes together). */
export const SQS_MAX_BATCH_BYTES = 1_048_576;
/** A dead-letter reason is cut to this many bytes at most. */
const MAX_REASON_BYTES = 1_000;
/** Characters SQS accepts in a message or attribute (as the emulator checks: the BMP only). */
const NOT_SQS_TEXT = /[^\x09\x0A\x0D\x20-\uD7FF\uE000-\uFFFD]/g;

/** A dead-letter entry ready to send, and the bytes SQS counts for it. */
export interface DeadLetterEntry {
  entry: {
    MessageBody: string;
    MessageAttributes: Record<"invalid_reason" | "source_message_id" | "source_sent_timestamp", { DataType: string; StringValue: string }>;
  };
  bytes: number;
}

/**
 * The dead-letter entry of a message: the body unchanged, why it was refused, and where it
 * came from. SQS counts the body and every attribute's name, type and value against the
 * DLQ's limit, so the reason is shortened to fit beside the body.
 *
 * @param maxBytes the DLQ's `MaximumMessageSize`, at most SQS's 1 MiB
 * @returns the entry, or undefined when the body leaves no room even for a shortened reason
 */
export function fitDeadLetterEntry(message: Message, reason: string, maxBytes = SQS_MAX_BATCH_BYTES): DeadLetterEntry | undefined {
  const MessageBody = message.Body || "(empty body)";
  const sourceId = message.MessageId ?? "";
  const sentTimestamp = message.Attributes?.SentTimestamp ?? "0";
  const withoutReason = utf8Bytes(MessageBody) + utf8Bytes("invalid_reason") + utf8Bytes("String") +
    utf8Bytes("source_message_id") + utf8Bytes("String") + utf8Bytes(sourceId) +
    utf8Bytes("source_sent_timestamp") + utf8Bytes("Number") + utf8Bytes(sentTimestamp);
  const room = Math.min(Math.min(maxBytes, SQS_MAX_BATCH_BYTES) - withoutReason, MAX_REASON_BYTES);
  const shown = cutToBytes(reason.replace(NOT_SQS_TEXT, "?"), room);
  if (shown === "") return undefined;
  return {
    entry: {
      MessageBody,
      MessageAttributes: {
        invalid_reason: { DataType: "String", StringValue: shown },
        source_message_id: { DataType: "String", StringValue: sourceId },
        source_sent_timestamp: { DataType: "Number", StringValue: sentTimestamp },
      },
    },
    bytes: withoutReason + utf8Bytes(shown),
  };
}

/** `text` in at most `maxBytes` of UTF-8, cut on a character and marked with "…" when cut. */
function cutToBytes(text: string, maxBytes: number): string {
  if (maxBytes <= 0) return "";
  if (utf8Bytes(text) <= maxBytes) return text;
  const ellipsis = maxBytes > 3 ? "…" : "";
  let budget = maxBytes - utf8Bytes(ellipsis);
  let end = 0;
  for (const char of text) {
    const point = char.codePointAt(0)!;
    const size = point < 0x80 ? 1 : point < 0x800 ? 2 : point < 0x10000 ? 3 : 4;
    if (size > budget) break;
    budget -= size;
    end += char.length;
  }
  return end === 0 ? "" : text.slice(0, end) + ellipsis;
}

/**
 * Split into groups of at most 10 whose sizes add up to at most SQS's limit per batch call:
 * ten large invalid bodies in one SendMessageBatch are refused whole (BatchRequestTooLong),
 * which stopped the tool (found by the poison tests).
 */
export function chunkByBytes<T>(items: readonly T[], bytesOf: (item: T) => number, maxBytes = SQS_MAX_BATCH_BYTES): T[][] {
  const groups: T[][] = [];
  let group: T[] = [];
  let bytes = 0;
  for (const item of items) {
    const size = bytesOf(item);
    if (group.length > 0 && (group.length === SQS_MAX_BATCH || bytes + size > maxBytes)) {
      groups.push(group);
      group = [];
      bytes = 0;
    }
    group.push(item);
    bytes += size;
  }
  if (group.length > 0) groups.push(group);
  return groups;
}

function utf8Bytes(text: string): number {
  return Buffer.byteLength(text, "utf8");
}

function chunk<T>(items: readonly T[], size: number): T[][] {
  const chunks: T[][] = [];
  for (let i = 0; i < items.length; i += size) chunks.push(items.slice(i, i + size));
  return chunks;
}

// ---------------------------------------------------------------------------------------
// Pipeline
// ---------------------------------------------------------------------------------------

/** Counters the consumer keeps; the summary at the end of a run. */
export interface ConsumerStats {
  received: number;
  loaded: number;
  duplicates: number;
  deadLettered: number;
  /**
   * Invalid messages left in the queue, for its own redrive policy to move: no DLQ is
   * configured, or the message is too big for the DLQ, or the DLQ refused it.
   */
  leftInQueue: number;
  /** Messages handed back to the queue unfinished (visible again at once): at a stop, or past a batch's deadline. */
  released: number;
  retries: number;
  startedAt: number;
  finishedAt?: number;
}

export interface ConsumerOptions {
  sqs: SQSClient;
  pool: DatabasePool;
  strategy: MaskStrategy;
  queueUrl: string;
  dlqUrl?: string | undefined;
  /** The DLQ's `MaximumMessageSize`: an entry that cannot fit is left to the queue's redrive policy. */
  dlqMaxMessageBytes?: number;
  /** Stop when the queue holds nothing, neither visible nor in flight. */
  drain?: boolean;
  batchSize?: number;
  /** Receives in flight at once. */
  concurrency?: number;
  /** Bytes of message bodies held in flight at most; receiving waits while they would exceed it. */
  maxInFlightBytes?: number;
  /** The queue's visibility timeout, for the heartbeat that keeps slow work invisible. */
  visibilityTimeoutSeconds?: number;
  /** Long-poll wait per receive. */
  waitTimeSeconds?: number;
  /** How long a stop may wait for in-flight work before abandoning it and releasing it to the queue. */
  shutdownGraceMs?: number;
  /** A batch not committed this long after it was formed is abandoned and its messages released. */
  batchDeadlineMs?: number;
  logger?: Logger;
  /** Told of each batch and retry, for metrics and the per-second summary. */
  observer?: ConsumerObserver;
}

/** What one written batch came to, for metrics and logs: counts and time, never data. */
export interface BatchReport {
  /** Messages in the batch, duplicates included. */
  size: number;
  rows: number;
  duplicates: number;
  rejected: number;
  /** From masking to commit. */
  ms: number;
}

/** Hooks the consumer calls as it works; each must be cheap and must not throw. */
export interface ConsumerObserver {
  onBatch?(report: BatchReport): void;
  onRetry?(service: "sqs" | "postgres"): void;
}

export interface Consumer {
  /** Run until drained or stopped; resolves with the final counters. */
  run(): Promise<ConsumerStats>;
  /**
   * Stop receiving, finish and commit what is in flight within the grace, then abandon what
   * is left and release it to the queue.
   */
  stop(): void;
  readonly stats: ConsumerStats;
  /** Messages received and not yet deleted or released. */
  readonly inFlight: number;
  /** Bytes of the bodies of those messages. */
  readonly inFlightBytes: number;
}

interface InFlight {
  message: Message;
  receiptHandle: string;
  extendedAt: number;
  /** The body's size, counted against the byte bound. */
  bytes: number;
}

const BACKOFF_START_MS = 200;
const HEARTBEAT_MIN_MS = 100;
/** A receive older than this on stop is parked in a long poll, not answering. */
const RECEIVE_SETTLE_MS = 1_000;
const BACKOFF_MAX_MS = 5_000;
const LINGER_MS = 20;
const MAX_PARALLEL_WRITES = 2;
/** How often drain mode looks whether it is done; the run ends at most this late. */
const DRAIN_CHECK_MS = 50;
const EMPTY_SHORT_POLL_PAUSE_MS = 50;
/** How often a stop says what it still waits for. */
const STOP_PROGRESS_MS = 5_000;
/** After the grace, how long abandoned work gets to unwind (closing connections) before release. */
const ABANDON_WAIT_MS = 2_000;
/** Releasing at the end of a stop: one short try, then the messages return after their timeout. */
const RELEASE_DEADLINE_MS = 2_000;
/**
 * What one receive may bring is guessed from the largest recent one, which counts for less
 * with each receive after it: a burst of large bodies narrows the receives in flight at once,
 * and a run of small ones widens them again within some tens of receives.
 */
const RECEIVE_ESTIMATE_DECAY = 0.8;

function backoffDelay(attempt: number): number {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** attempt);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** Wait for `promise`, or `ms` at most; no timer is left behind either way. */
async function waitAtMost(promise: Promise<unknown>, ms: number): Promise<void> {
  const done = new AbortController();
  await Promise.race([promise, sleep(ms, done.signal)]);
  done.abort();
}

/**
 * Create a consumer: receives in parallel, batches valid messages into one transaction,
 * dead-letters invalid ones, deletes in batches of 10, keeps slow work invisible, and
 * waits out transient faults. Every call to SQS and Postgres has a deadline, what is held in
 * flight is bounded in messages and bytes, and a stop ends within its grace whatever blocks.
 *
 * @example
 * ```ts
 * const consumer = createConsumer({ sqs, pool, strategy, queueUrl, dlqUrl, drain: true });
 * const stats = await consumer.run();
 * ```
 */
export function createConsumer(options: ConsumerOptions): Consumer {
  const {
    sqs, pool, strategy, queueUrl, dlqUrl,
    dlqMaxMessageBytes = SQS_MAX_BATCH_BYTES,
    drain = false,
    batchSize = DEFAULT_BATCH_SIZE,
    concurrency = DEFAULT_CONCURRENCY,
    maxInFlightBytes = DEFAULT_MAX_IN_FLIGHT_MB * 1024 * 1024,
    visibilityTimeoutSeconds = 30,
    shutdownGraceMs = DEFAULT_STOP_GRACE_SECONDS * 1000,
    // Drain mode short-polls: a 1 s long poll made every run end a second after its last
    // message, which at 100 000 messages is several percent of the run. A long poll waits
    // no longer than a stop's grace (see `release`).
    waitTimeSeconds = drain ? 0 : Math.max(1, Math.min(20, Math.floor(shutdownGraceMs / 1000))),
    batchDeadlineMs = DEFAULT_BATCH_DEADLINE_SECONDS * 1000,
    logger = createLogger("silent"),
    observer = {},
  } = options;
  const stats: ConsumerStats = {
    received: 0, loaded: 0, duplicates: 0, deadLettered: 0, leftInQueue: 0, released: 0, retries: 0, startedAt: Date.now(),
  };
  // Backpressure: receive no more while this many messages await their commit and delete.
  const maxInFlight = Math.max(batchSize * (MAX_PARALLEL_WRITES + 1), concurrency * SQS_MAX_BATCH * 2);

  const receiving = new AbortController(); // ends the pollers' and drain watcher's waits on stop
  // Each receive in flight: its abort, when it started, and the timer that aborts it on stop.
  const activeReceives = new Map<AbortController, { startedAt: number; abortTimer?: ReturnType<typeof setTimeout> }>();
  const abandoning = new AbortController(); // at the end of a stop's grace: abandons every call and wait
  const inFlight = new Map<string, InFlight>();
  let inFlightBytes = 0;
  // Until the first receive answers, assume the largest (ten bodies of SQS's largest size),
  // so that one receive goes alone; from then on, what receives bring.
  let receiveBytesEstimate = SQS_MAX_BATCH * SQS_MAX_BATCH_BYTES;
  let receivesAnswered = 0;
  // Ids of invalid messages left in the queue, and the last receipt of each, so a stop can
  // hand them back; neither heartbeated nor counted in flight.
  const leftInQueue = new Map<string, string>();
  const work = new Set<Promise<void>>();
  let pending: Array<{ entry: InFlight; record: LoginRecord }> = [];
  let lingerTimer: ReturnType<typeof setTimeout> | undefined;
  let activeWrites = 0;
  const writeWaiters: Array<() => void> = [];
  // Every poller may be waiting for capacity at once: keep all their wake-ups, not the last.
  const capacityWaiters = new Set<() => void>();
  let stopping = false;
  let stopDeadline = 0;
  // Until when SQS may still answer the long polls a stop aborted (see `release`).
  let abortedPollsEndAt = 0;
  // While Postgres does not take writes, receive nothing: what is received would only wait.
  let postgresDown = false;
  let fatal: Error | undefined;
  let lastEmptyReceiveAt = 0;

  function track(promise: Promise<void>): void {
    const tracked = promise.catch((error) => fail(error)).finally(() => work.delete(tracked));
    work.add(tracked);
  }

  function fail(error: unknown): void {
    if (!fatal) {
      fatal = error instanceof FatalError ? error : new FatalError(
        classifyDatabaseError(error) === "fatal" && errorChain(error).some((e) => typeof e.code === "string")
          ? `Postgres refused the write: ${describeDatabaseError(error)}`
          // Scrubbed like a database error: an unexpected error may quote a value.
          : `Unexpected failure: ${firstLineScrubbed(error)}`,
      );
      logger.error("stopping after a failure that waiting cannot fix", { reason: fatal.message });
    }
    beginStop();
  }

  function hold(entry: InFlight): void {
    inFlight.set(entry.receiptHandle, entry);
    inFlightBytes += entry.bytes;
  }

  function settle(entries: readonly InFlight[]): void {
    for (const entry of entries) {
      if (inFlight.delete(entry.receiptHandle)) inFlightBytes -= entry.bytes;
    }
    wakeCapacityWaiters();
  }

  function wakeCapacityWaiters(): void {
    for (const wake of capacityWaiters) wake();
    capacityWaiters.clear();
  }

  /** Whether one more receive fits: its ten messages and its bytes, beside those held and those on the way. */
  function roomForReceive(): boolean {
    if (postgresDown) return false;
    const coming = activeReceives.size + 1;
    // One receive at a time always fits, whatever the bounds: the run must move.
    if (coming === 1 && inFlight.size === 0) return true;
    return inFlight.size + coming * SQS_MAX_BATCH <= maxInFlight && inFlightBytes + coming * receiveBytesEstimate <= maxInFlightBytes;
  }

  /** Wait for room, then count the receive in before anyone else looks. */
  async function startReceive(): Promise<AbortController | undefined> {
    while (!stopping && !roomForReceive()) await new Promise<void>((resolve) => capacityWaiters.add(resolve));
    if (stopping) return undefined;
    const receive = new AbortController();
    activeReceives.set(receive, { startedAt: Date.now() });
    return receive;
  }

  /** Run an SQS call until it succeeds, waiting out transient faults; undefined if abandoned. */
  async function withSqsRetry<T>(what: string, call: (options: SqsCallOptions) => Promise<T>): Promise<T | undefined> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await boundedSqsCall(call, SQS_CALL_DEADLINE_MS, abandoning.signal);
      } catch (error) {
        if (abandoning.signal.aborted) return undefined;
        if (!isTransientSqsError(error)) throw new FatalError(`SQS ${what} failed: ${describeSqsError(error)}`);
        stats.retries++;
        observer.onRetry?.("sqs");
        logger.warn(`SQS ${what} failed, retrying`, { reason: describeSqsError(error), attempt: attempt + 1 });
        await sleep(backoffDelay(attempt), abandoning.signal);
      }
    }
  }

  async function deleteMessages(entries: readonly InFlight[]): Promise<void> {
    const deleted: InFlight[] = [];
    await Promise.all(chunk(entries, SQS_MAX_BATCH).map(async (group) => {
      let remaining = group;
      for (let attempt = 0; remaining.length > 0 && attempt < 5; attempt++) {
        const result = await withSqsRetry("delete", (options) => sqs.send(new DeleteMessageBatchCommand({
          QueueUrl: queueUrl,
          Entries: remaining.map((entry, i) => ({ Id: String(i), ReceiptHandle: entry.receiptHandle })),
        }), options));
        // Abandoned at a stop: left in flight, so that the stop releases it.
        if (!result) return;
        const failed = result.Failed ?? [];
        // A stale handle means the message was received again elsewhere; that delivery
        // finds its id already processed and deletes it then. Other failures: try again.
        for (const f of failed) {
          logger.warn("SQS did not delete a message", {
            message_id: remaining[Number(f.Id)]?.message.MessageId, code: f.Code, sender_fault: f.SenderFault,
          });
        }
        const failedIds = new Set(failed.map((f) => f.Id));
        deleted.push(...remaining.filter((_, i) => !failedIds.has(String(i))));
        remaining = failed.filter((f) => f.Code !== "ReceiptHandleIsInvalid").map((f) => remaining[Number(f.Id)]!);
        if (remaining.length > 0) await sleep(backoffDelay(attempt), abandoning.signal);
      }
      // Given up after five tries, or a stale handle: it comes back and finds its id processed.
      deleted.push(...remaining);
    }));
    settle(deleted);
  }

  /**
   * Send invalid messages to the DLQ with their reason, then delete them from the queue.
   * What cannot go to the DLQ (none set, too big for it, refused by it) is left in the queue
   * for its own redrive policy: counted, not heartbeated, handed back by a stop.
   */
  async function deadLetter(items: ReadonlyArray<{ entry: InFlight; reason: string }>): Promise<void> {
    if (items.length === 0) return;
    if (!dlqUrl) {
      for (const { entry, reason } of items) {
        leaveInQueue(entry);
        logger.warn("invalid message left in the queue (no --dlq-url)", { message_id: entry.message.MessageId, reason });
      }
      return;
    }
    const fitting: Array<{ item: { entry: InFlight; reason: string }; entry: DeadLetterEntry }> = [];
    for (const item of items) {
      const entry = fitDeadLetterEntry(item.entry.message, item.reason, dlqMaxMessageBytes);
      if (entry) {
        fitting.push({ item, entry });
        continue;
      }
      leaveInQueue(item.entry);
      logger.warn("invalid message too big for the DLQ left in the queue for its redrive policy", {
        message_id: item.entry.message.MessageId, reason: item.reason, bytes: item.entry.bytes, dlq_limit: dlqMaxMessageBytes,
      });
    }
    const sent: InFlight[] = [];
    for (const group of chunkByBytes(fitting, (f) => f.entry.bytes)) {
      const result = await withSqsRetry("send to DLQ", (options) => sqs.send(new SendMessageBatchCommand({
        QueueUrl: dlqUrl,
        Entries: group.map(({ entry }, i) => ({ ...entry.entry, Id: String(i) })),
      }), options));
      // Abandoned at a stop: left in flight, so that the stop releases it.
      if (!result) continue;
      for (const ok of result.Successful ?? []) {
        const { item } = group[Number(ok.Id)]!;
        sent.push(item.entry);
        logger.warn("invalid message sent to the DLQ", { message_id: item.entry.message.MessageId, reason: item.reason });
      }
      for (const f of result.Failed ?? []) {
        const { item } = group[Number(f.Id)]!;
        leaveInQueue(item.entry);
        logger.warn("DLQ refused a message; left in the queue for its redrive policy", { message_id: item.entry.message.MessageId, code: f.Code });
      }
    }
    stats.deadLettered += sent.length;
    await deleteMessages(sent);
  }

  /** Leave an invalid message in the queue: counted once per message, no longer in flight. */
  function leaveInQueue(entry: InFlight): void {
    const id = entry.message.MessageId ?? "";
    if (!leftInQueue.has(id)) stats.leftInQueue++;
    leftInQueue.set(id, entry.receiptHandle);
    settle([entry]);
  }

  /** Write one batch, waiting out transient database faults until its deadline, then acknowledge it. */
  async function processBatch(batch: Array<{ entry: InFlight; record: LoginRecord }>, deadline: ReturnType<typeof deadlineSignal>): Promise<void> {
    const startedAt = Date.now();
    const masked: MaskedRecord[] = [];
    for (const { record } of batch) {
      const m = maskRecord(strategy, record);
      masked.push(m instanceof Promise ? await m : m);
    }
    let outcome: WriteOutcome | undefined;
    for (let attempt = 0; !outcome; attempt++) {
      if (deadline.signal.aborted) return await giveUp(batch.map((b) => b.entry), deadline);
      try {
        outcome = await withDatabaseCallLimits({ signal: deadline.signal }, () => writeBatch(pool, strategy, masked));
        postgresAnswers();
      } catch (error) {
        if (deadline.signal.aborted) return await giveUp(batch.map((b) => b.entry), deadline);
        if (classifyDatabaseError(error) !== "transient") throw error;
        postgresFails();
        stats.retries++;
        observer.onRetry?.("postgres");
        logger.warn("Postgres unavailable, retrying the batch", { reason: describeDatabaseError(error), attempt: attempt + 1, size: batch.length });
        await sleep(backoffDelay(attempt), deadline.signal);
      }
    }
    stats.loaded += outcome.inserted;
    stats.duplicates += outcome.duplicates;
    const entryOf = new Map(batch.map((b) => [b.record, b.entry]));
    const committed = outcome.committed.map((m) => entryOf.get(m.record)!);
    const report = { size: batch.length, rows: outcome.inserted, duplicates: outcome.duplicates, rejected: outcome.rejected.length, ms: Date.now() - startedAt };
    logger.debug("batch committed", { ...report });
    observer.onBatch?.(report);
    await Promise.all([
      deleteMessages(committed),
      deadLetter(outcome.rejected.map((r) => ({ entry: entryOf.get(r.masked.record)!, reason: r.reason }))),
    ]);
  }

  /**
   * A batch that cannot commit in time: at a stop its messages stay in flight for the stop
   * to release; past its own deadline they are released now, for any consumer to take,
   * rather than kept invisible by the heartbeat while this one cannot write them.
   */
  async function giveUp(entries: readonly InFlight[], deadline: ReturnType<typeof deadlineSignal>): Promise<void> {
    if (!deadline.expired()) {
      logger.warn("giving up on a batch at shutdown; its messages return to the queue", { size: entries.length });
      return;
    }
    logger.warn("batch not committed by its deadline; releasing its messages to the queue", { size: entries.length, deadline_s: batchDeadlineMs / 1000 });
    // Whatever held it (no answer, a lock) holds the next batch too: take no more until a write goes through.
    postgresFails();
    await releaseToQueue(entries, SQS_CALL_DEADLINE_MS);
  }

  /** Postgres failed a write: receive nothing more until it answers again. */
  function postgresFails(): void {
    if (postgresDown) return;
    postgresDown = true;
    logger.warn("Postgres unavailable: receiving paused until it answers");
    track(probePostgres());
  }

  function postgresAnswers(): void {
    if (!postgresDown) return;
    postgresDown = false;
    logger.info("Postgres answers again: receiving resumed");
    wakeCapacityWaiters();
  }

  /**
   * While receiving is paused and no batch may be left to find out, ask Postgres itself:
   * with a write of no rows, which waits for the same table lock a batch would.
   */
  async function probePostgres(): Promise<void> {
    for (let attempt = 0; postgresDown && !stopping; attempt++) {
      await sleep(backoffDelay(attempt), receiving.signal);
      if (!postgresDown || stopping) return;
      try {
        await withDatabaseCallLimits({ signal: receiving.signal }, () => pool.query(sql.unsafe`INSERT INTO user_logins (user_id) SELECT NULL WHERE false`));
        postgresAnswers();
      } catch {
        // Still down; the batches' retries say why.
      }
    }
  }

  async function acquireWriter(): Promise<void> {
    while (activeWrites >= MAX_PARALLEL_WRITES) await new Promise<void>((resolve) => writeWaiters.push(resolve));
    activeWrites++;
  }

  function releaseWriter(): void {
    activeWrites--;
    writeWaiters.shift()?.();
  }

  function flush(): void {
    clearTimeout(lingerTimer);
    lingerTimer = undefined;
    while (pending.length > 0) {
      const batch = pending.slice(0, batchSize);
      pending = pending.slice(batchSize);
      // The deadline counts from now: waiting for a writer is part of not committing in time.
      const deadline = deadlineSignal(batchDeadlineMs, abandoning.signal);
      track((async () => {
        await acquireWriter();
        try {
          await processBatch(batch, deadline);
        } finally {
          releaseWriter();
          deadline.clear();
        }
      })());
    }
  }

  function accept(messages: readonly Message[]): void {
    const invalid: Array<{ entry: InFlight; reason: string }> = [];
    for (const message of messages) {
      const entry = received(message);
      if (!entry) continue;
      const decoded = decodeMessage(message);
      if (decoded.ok) pending.push({ entry, record: decoded.record });
      else invalid.push({ entry, reason: decoded.reason });
    }
    if (invalid.length > 0) track(deadLetter(invalid));
    if (pending.length >= batchSize) flush();
    else if (pending.length > 0 && !lingerTimer) lingerTimer = setTimeout(flush, LINGER_MS);
  }

  /** Hold a received message in flight; undefined if SQS gave no receipt to act on it with. */
  function received(message: Message): InFlight | undefined {
    if (!message.ReceiptHandle) return undefined;
    const entry = { message, receiptHandle: message.ReceiptHandle, extendedAt: Date.now(), bytes: message.Body?.length ?? 0 };
    hold(entry);
    return entry;
  }

  async function poll(): Promise<void> {
    for (let attempt = 0; !stopping;) {
      const receive = await startReceive();
      if (!receive) break;
      try {
        const { Messages = [] } = await boundedSqsCall((options) => sqs.send(new ReceiveMessageCommand({
          QueueUrl: queueUrl,
          MaxNumberOfMessages: SQS_MAX_BATCH,
          WaitTimeSeconds: waitTimeSeconds,
          MessageSystemAttributeNames: ["SentTimestamp"],
        }), options), waitTimeSeconds * 1000 + SQS_CALL_DEADLINE_MS, receive.signal);
        attempt = 0;
        stats.received += Messages.length;
        let bytes = 0;
        for (const message of Messages) bytes += message.Body?.length ?? 0;
        receiveBytesEstimate = receivesAnswered++ === 0 ? bytes : Math.max(bytes, receiveBytesEstimate * RECEIVE_ESTIMATE_DECAY);
        if (Messages.length === 0) {
          lastEmptyReceiveAt = Date.now();
          // A short poll answers at once; pause so an empty queue is not asked in a tight loop.
          if (waitTimeSeconds === 0) await sleep(EMPTY_SHORT_POLL_PAUSE_MS, receiving.signal);
        } else if (stopping) {
          // Not started: held only to be handed back by `release()`.
          for (const message of Messages) received(message);
        } else {
          accept(Messages);
        }
      } catch (error) {
        if (stopping) break;
        if (!isTransientSqsError(error)) throw new FatalError(`SQS receive failed: ${describeSqsError(error)}`);
        stats.retries++;
        observer.onRetry?.("sqs");
        logger.warn("SQS receive failed, retrying", { reason: describeSqsError(error), attempt: attempt + 1 });
        await sleep(backoffDelay(attempt++), receiving.signal);
      } finally {
        // A pending abort timer would hold the process open after the run (a second, measured).
        clearTimeout(activeReceives.get(receive)?.abortTimer);
        activeReceives.delete(receive);
        wakeCapacityWaiters();
      }
    }
  }

  /**
   * On stop, abort receives parked in a long poll, but let young ones answer: a receive
   * aborted while its answer is on the way leaves those messages invisible for a whole
   * timeout, as if lost (found by the clean-stop test). What they bring is released.
   */
  function abortParkedReceives(): void {
    for (const [receive, active] of activeReceives) {
      abortedPollsEndAt = Math.max(abortedPollsEndAt, active.startedAt + waitTimeSeconds * 1000);
      const wait = RECEIVE_SETTLE_MS - (Date.now() - active.startedAt);
      if (wait <= 0) receive.abort();
      else active.abortTimer = setTimeout(() => receive.abort(), wait);
    }
  }

  /** Set the visibility timeout of up to 10 messages; entry ids are their indexes. */
  function changeVisibility(group: ReadonlyArray<{ receiptHandle: string }>, seconds: number, deadlineMs = SQS_CALL_DEADLINE_MS) {
    return boundedSqsCall((options) => sqs.send(new ChangeMessageVisibilityBatchCommand({
      QueueUrl: queueUrl,
      Entries: group.map((e, i) => ({ Id: String(i), ReceiptHandle: e.receiptHandle, VisibilityTimeout: seconds })),
    }), options), deadlineMs);
  }

  /**
   * Keep in-flight messages invisible while they wait, at the queue's own timeout: a message
   * is extended once half its timeout has passed, and the timer ticks every quarter, so the
   * extension lands by three quarters of the timeout at the latest.
   */
  async function heartbeat(): Promise<void> {
    // With a timeout of 0 there is nothing to extend: "extending" to 0 would release.
    if (visibilityTimeoutSeconds <= 0) return;
    const halfTimeoutMs = (visibilityTimeoutSeconds * 1000) / 2;
    const due = [...inFlight.values()].filter((e) => Date.now() - e.extendedAt >= halfTimeoutMs);
    await Promise.all(chunk(due, SQS_MAX_BATCH).map(async (group) => {
      // The new timeout counts from when SQS gets the call, not from its answer: note the
      // earlier time, so the next extension is never late.
      const sentAt = Date.now();
      try {
        const result = await changeVisibility(group, visibilityTimeoutSeconds);
        const failedIds = new Set((result.Failed ?? []).map((f) => f.Id));
        group.forEach((e, i) => { if (!failedIds.has(String(i))) e.extendedAt = sentAt; });
        logger.debug("extended visibility", { count: group.length - failedIds.size, seconds: visibilityTimeoutSeconds });
        if (failedIds.size > 0) logger.warn("SQS did not extend visibility", { count: failedIds.size });
      } catch (error) {
        logger.warn("SQS visibility extension failed", { reason: describeSqsError(error) });
      }
    }));
  }

  /** Make messages visible again in `seconds` (not after their timeout), and stop holding them. */
  async function releaseToQueue(entries: readonly InFlight[], deadlineMs: number, seconds = 0): Promise<void> {
    const unfinished = entries.filter((e) => inFlight.has(e.receiptHandle));
    await Promise.all(chunk(entries, SQS_MAX_BATCH).map(async (group) => {
      try {
        const { Failed = [] } = await changeVisibility(group, seconds, deadlineMs);
        // A stale receipt (the message was received again since) needs nothing from us.
        const failed = Failed.filter((f) => f.Code !== "ReceiptHandleIsInvalid");
        if (failed.length > 0) logger.warn("SQS did not release some messages; they return after their visibility timeout", { count: failed.length, code: failed[0]!.Code });
      } catch (error) {
        logger.warn("could not release messages; they return after their visibility timeout", { reason: describeSqsError(error) });
      }
    }));
    stats.released += unfinished.length;
    settle(unfinished);
  }

  /**
   * At the end of a run: hand back what is in flight, and what was left for the redrive
   * policy. A long poll aborted by the stop lives on in SQS until its wait ends, and SQS
   * gives it the next visible message, which nobody then reads: a message released at once
   * would go there and stay invisible for a whole timeout. So it becomes visible when
   * the last of those polls has ended; after a full grace (polls wait no longer) that is now.
   */
  async function release(): Promise<void> {
    const entries = [...inFlight.values()];
    const left = [...leftInQueue.values()].map((receiptHandle) => ({ receiptHandle }) as InFlight);
    leftInQueue.clear();
    if (entries.length === 0 && left.length === 0) return;
    // A second more than they may live: a poll that ends takes what is visible at that moment.
    const visibleIn = abortedPollsEndAt > Date.now() ? Math.ceil((abortedPollsEndAt - Date.now()) / 1000) + 1 : 0;
    if (entries.length > 0) logger.warn("releasing unfinished messages to the queue", { count: entries.length, visible_in_s: visibleIn });
    // A receipt of a message left in the queue may be stale by now (received again since): harmless.
    await releaseToQueue([...entries, ...left], RELEASE_DEADLINE_MS, visibleIn);
  }

  /** In drain mode: done when nothing is ours and the queue holds only what we left in it. */
  async function watchDrain(): Promise<void> {
    while (!stopping) {
      await sleep(DRAIN_CHECK_MS, receiving.signal);
      if (stopping || inFlight.size > 0 || pending.length > 0 || work.size > 0) continue;
      if (Date.now() - lastEmptyReceiveAt > 1_000) continue;
      try {
        const { Attributes = {} } = await boundedSqsCall((options) => sqs.send(new GetQueueAttributesCommand({
          QueueUrl: queueUrl,
          AttributeNames: ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"],
        }), options), SQS_CALL_DEADLINE_MS, receiving.signal);
        const total = Number(Attributes.ApproximateNumberOfMessages ?? 0) +
          Number(Attributes.ApproximateNumberOfMessagesNotVisible ?? 0) +
          Number(Attributes.ApproximateNumberOfMessagesDelayed ?? 0);
        if (total <= leftInQueue.size && inFlight.size === 0 && work.size === 0) {
          logger.debug("queue drained", { left_in_queue: leftInQueue.size });
          beginStop();
        }
      } catch (error) {
        if (!stopping) logger.warn("could not read queue depth", { reason: describeSqsError(error) });
      }
    }
  }

  /** Stop receiving; what is in flight has the grace from now to finish. */
  function beginStop(): void {
    if (stopping) return;
    stopping = true;
    stopDeadline = Date.now() + shutdownGraceMs;
    receiving.abort();
    abortParkedReceives();
    wakeCapacityWaiters();
  }

  /**
   * Wait for what is in flight to finish until the grace ends, saying what it waits for;
   * then abandon it (calls aborted, connections closed, so open transactions roll back) and
   * give it a moment to unwind. What is left is released by `release()`.
   */
  async function finishInFlight(): Promise<void> {
    const settled = (async () => {
      while (work.size > 0) await Promise.all([...work]);
    })();
    if (work.size === 0) return;
    const progress = setInterval(() => logger.info("stopping: still waiting", {
      in_flight: inFlight.size, seconds_left: Math.max(0, Math.round((stopDeadline - Date.now()) / 1000)),
    }), STOP_PROGRESS_MS);
    try {
      await waitAtMost(settled, stopDeadline - Date.now());
    } finally {
      clearInterval(progress);
    }
    if (work.size === 0) return;
    logger.warn("stop grace over: abandoning what is in flight", { in_flight: inFlight.size });
    abandoning.abort();
    await waitAtMost(settled, ABANDON_WAIT_MS);
  }

  async function run(): Promise<ConsumerStats> {
    // A quarter of the timeout: with a 1 s floor, a 2 s queue timeout let extensions land
    // at the very moment messages became visible again (found by the slow-batch test).
    const heartbeatTimer = setInterval(() => void heartbeat(), Math.max(HEARTBEAT_MIN_MS, (visibilityTimeoutSeconds * 1000) / 4));
    try {
      const pollers = Array.from({ length: concurrency }, () => poll().catch(fail));
      if (drain) void watchDrain();
      await Promise.all(pollers);
      flush();
      await finishInFlight();
      await release();
    } finally {
      clearInterval(heartbeatTimer);
      clearTimeout(lingerTimer);
      stats.finishedAt = Date.now();
    }
    if (fatal) throw fatal;
    return stats;
  }

  return {
    run, stats,
    stop() {
      if (stopping) return;
      beginStop();
      // What someone who pressed Ctrl-C wants to see: how much is in flight, and how long it may take.
      logger.info("stopping: finishing what is in flight", {
        in_flight: inFlight.size, wait_until: new Date(stopDeadline).toISOString(), grace_s: shutdownGraceMs / 1000,
      });
    },
    get inFlight() {
      return inFlight.size;
    },
    get inFlightBytes() {
      return inFlightBytes;
    },
  };
}

// ---------------------------------------------------------------------------------------
// Observability: Prometheus metrics, health endpoints, batch summaries, drain progress.
// Counts and times only: no label or line here ever carries a message's content.
// ---------------------------------------------------------------------------------------

/** Prefix of every metric name. */
export const METRIC_PREFIX = "login_masker";
const BATCH_SIZE_BUCKETS = [1, 10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];
const BATCH_SECONDS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** A Prometheus histogram: cumulative bucket counts, sum and count. */
class Histogram {
  readonly buckets: readonly number[];
  readonly counts: number[];
  sum = 0;
  count = 0;
  // No parameter properties: they are not erasable, and the image runs mod.ts with Node's type stripping.
  constructor(buckets: readonly number[]) {
    this.buckets = buckets;
    this.counts = buckets.map(() => 0);
  }
  observe(value: number): void {
    this.sum += value;
    this.count++;
    this.buckets.forEach((bound, i) => { if (value <= bound) this.counts[i]!++; });
  }
  render(name: string, help: string): string[] {
    return [
      `# HELP ${name} ${help}`,
      `# TYPE ${name} histogram`,
      ...this.buckets.map((bound, i) => `${name}_bucket{le="${bound}"} ${this.counts[i]}`),
      `${name}_bucket{le="+Inf"} ${this.count}`,
      `${name}_sum ${this.sum}`,
      `${name}_count ${this.count}`,
    ];
  }
}

/** Metrics fed by the consumer's observer and read from its counters at scrape time. */
export interface Metrics {
  observer: Required<ConsumerObserver>;
  /** The Prometheus text exposition of everything, for `GET /metrics`. */
  render(stats: ConsumerStats, inFlight: number, inFlightBytes?: number): string;
}

/**
 * Create the metrics registry. Counters come from `ConsumerStats` (one source of truth);
 * only what the stats do not keep (histograms, retries per service) is kept here.
 */
export function createMetrics(): Metrics {
  const batchSize = new Histogram(BATCH_SIZE_BUCKETS);
  const batchSeconds = new Histogram(BATCH_SECONDS_BUCKETS);
  const retries = { sqs: 0, postgres: 0 };
  const counter = (name: string, help: string, value: number) =>
    [`# HELP ${METRIC_PREFIX}_${name} ${help}`, `# TYPE ${METRIC_PREFIX}_${name} counter`, `${METRIC_PREFIX}_${name} ${value}`];
  return {
    observer: {
      onBatch(report) {
        batchSize.observe(report.size);
        batchSeconds.observe(report.ms / 1000);
      },
      onRetry(service) {
        retries[service]++;
      },
    },
    render(stats, inFlight, inFlightBytes = 0) {
      return [
        ...counter("messages_received_total", "Messages received from the queue, redeliveries included.", stats.received),
        ...counter("rows_loaded_total", "Rows inserted into user_logins.", stats.loaded),
        ...counter("duplicates_total", "Messages whose row was already loaded (redeliveries).", stats.duplicates),
        ...counter("messages_dead_lettered_total", "Invalid or refused messages sent to the dead-letter queue.", stats.deadLettered),
        ...counter("messages_left_in_queue_total",
          "Invalid messages left in the queue for its redrive policy: no DLQ set, too big for the DLQ, or refused by it.", stats.leftInQueue),
        ...counter("messages_released_total",
          "Messages handed back to the queue unfinished: at a stop, or not committed by their batch's deadline.", stats.released),
        `# HELP ${METRIC_PREFIX}_retries_total Calls retried after a transient fault, by service.`,
        `# TYPE ${METRIC_PREFIX}_retries_total counter`,
        `${METRIC_PREFIX}_retries_total{service="sqs"} ${retries.sqs}`,
        `${METRIC_PREFIX}_retries_total{service="postgres"} ${retries.postgres}`,
        `# HELP ${METRIC_PREFIX}_in_flight_messages Messages received and not yet deleted or released.`,
        `# TYPE ${METRIC_PREFIX}_in_flight_messages gauge`,
        `${METRIC_PREFIX}_in_flight_messages ${inFlight}`,
        `# HELP ${METRIC_PREFIX}_in_flight_bytes Bytes of the bodies of the messages in flight (bounded by --max-in-flight-mb).`,
        `# TYPE ${METRIC_PREFIX}_in_flight_bytes gauge`,
        `${METRIC_PREFIX}_in_flight_bytes ${inFlightBytes}`,
        ...batchSize.render(`${METRIC_PREFIX}_batch_size`, "Messages per written batch."),
        ...batchSeconds.render(`${METRIC_PREFIX}_batch_duration_seconds`, "Time from masking a batch to its commit."),
      ].join("\n") + "\n";
    },
  };
}

/** What `/readyz` checks; each check resolves or throws a one-line reason. */
export interface ReadinessChecks {
  postgres(): Promise<void>;
  sqs(): Promise<void>;
}

/** How long a readiness answer is reused: probes may come every second from many places. */
export const READY_CACHE_MS = 3_000;
const READY_CHECK_TIMEOUT_MS = 2_000;

/**
 * The readiness checks of a running tool: `SELECT 1` on the pool and `GetQueueAttributes`
 * on the queue, each bounded by a short timeout.
 */
export function createReadinessChecks(pool: DatabasePool, sqs: SQSClient, queueUrl: string): ReadinessChecks {
  return {
    async postgres() {
      try {
        // The call's own deadline closes a silent connection; the outer one covers the wait for a free one.
        await withTimeout(withDatabaseCallLimits({ deadlineMs: READY_CHECK_TIMEOUT_MS }, () => pool.query(sql.unsafe`SELECT 1`)), READY_CHECK_TIMEOUT_MS);
      } catch (error) {
        throw new Error(describeDatabaseError(error));
      }
    },
    async sqs() {
      try {
        await sqs.send(new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ["QueueArn"] }),
          { abortSignal: AbortSignal.timeout(READY_CHECK_TIMEOUT_MS) });
      } catch (error) {
        throw new Error(describeSqsError(error));
      }
    },
  };
}

/** A running metrics server. */
export interface MetricsServer {
  port: number;
  close(): Promise<void>;
}

/**
 * Serve `GET /metrics` (Prometheus text), `/healthz` (200 while the process runs) and
 * `/readyz` (200 when Postgres and SQS answer, else 503 naming which does not; cached
 * for `READY_CACHE_MS`).
 *
 * @param port TCP port (0 picks a free one)
 * @param render the metrics text
 * @param checks what `/readyz` asks
 * @param host the address to listen on; every interface when undefined (what a container needs)
 */
export async function startMetricsServer(port: number, render: () => string, checks: ReadinessChecks, host?: string): Promise<MetricsServer> {
  const { createServer } = await import("node:http");
  let cached: { at: number; answer: Promise<{ ok: boolean; text: string }> } | undefined;
  const readiness = () => {
    if (!cached || Date.now() - cached.at > READY_CACHE_MS) {
      const answer = Promise.allSettled([checks.postgres(), checks.sqs()]).then(([pg, queue]) => {
        const failures = [["postgres", pg], ["sqs", queue]]
          .filter(([, r]) => (r as PromiseSettledResult<void>).status === "rejected")
          .map(([name, r]) => `${name}: ${((r as PromiseRejectedResult).reason as Error).message}`);
        return { ok: failures.length === 0, text: failures.length === 0 ? "ready\n" : failures.join("\n") + "\n" };
      });
      cached = { at: Date.now(), answer };
    }
    return cached.answer;
  };
  const server = createServer((request, response) => {
    const path = (request.url ?? "/").split("?")[0];
    const reply = (status: number, text: string, type = "text/plain; charset=utf-8") => {
      response.writeHead(status, { "content-type": type }).end(text);
    };
    if (request.method !== "GET" && request.method !== "HEAD") return reply(405, "GET only\n");
    if (path === "/metrics") return reply(200, render(), "text/plain; version=0.0.4; charset=utf-8");
    if (path === "/healthz") return reply(200, "ok\n");
    if (path === "/readyz") {
      void readiness().then(({ ok, text }) => reply(ok ? 200 : 503, text), () => reply(503, "readiness check failed\n"));
      return;
    }
    reply(404, "try /metrics, /healthz or /readyz\n");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error) => reject(new FatalError(`Cannot serve metrics on ${host ?? "every interface"} port ${port}: ${(error as Error).message}`)));
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as { port: number }).port,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections?.();
      server.close(() => resolve());
    }),
  };
}

/** How often the batch summary is logged, at most. */
export const SUMMARY_INTERVAL_MS = 1_000;

/** The batch log of `createBatchSummary`. */
export interface BatchSummary {
  onBatch(report: BatchReport): void;
  /** Log what is pending now. */
  flush(): void;
  /** Stop the interval and log what is pending. */
  stop(): void;
}

/**
 * Log batches at info as one line per interval rather than one per batch: at a few
 * thousand messages a second, batches of tens would make a hundred lines a second, more log
 * than data; a quiet interval logs nothing. Each batch is still logged at debug.
 *
 * @returns the observer hook and `flush` (log what is pending now, e.g. at exit)
 */
export function createBatchSummary(logger: Logger, intervalMs = SUMMARY_INTERVAL_MS): BatchSummary {
  const empty = () => ({ batches: 0, rows: 0, duplicates: 0, rejected: 0, totalMs: 0, maxMs: 0 });
  let pending = empty();
  const flush = () => {
    if (pending.batches === 0) return;
    const { batches, rows, duplicates, rejected, totalMs, maxMs } = pending;
    pending = empty();
    logger.info("batches written", { batches, rows, duplicates, rejected, ms_avg: Math.round(totalMs / batches), ms_max: maxMs });
  };
  // Not unref'd: Deno's timers are numbers; `stop()` ends it, as main does in its finally.
  const timer = setInterval(flush, intervalMs);
  return {
    onBatch(report: BatchReport) {
      pending.batches++;
      pending.rows += report.rows;
      pending.duplicates += report.duplicates;
      pending.rejected += report.rejected;
      pending.totalMs += report.ms;
      pending.maxMs = Math.max(pending.maxMs, report.ms);
    },
    flush,
    stop() {
      clearInterval(timer);
      flush();
    },
  };
}

/** The numbers the drain progress line shows. */
export interface Progress {
  loaded: number;
  deadLettered: number;
  /** Rows per second over the last sample. */
  rate: number;
  /** The queue's ApproximateNumberOfMessages, or undefined before the first answer. */
  remaining: number | undefined;
}

/** The live line of `createProgressLine`. */
export interface ProgressLine {
  /** Erase the line before something else is written to the terminal. */
  clear(): void;
  stop(): void;
}

/** One progress line, e.g. `loaded 1,200  dead-lettered 3  850/s  ~4,000 left`. */
export function formatProgress(p: Progress): string {
  const n = (value: number) => Math.round(value).toLocaleString("en-US");
  return `loaded ${n(p.loaded)}  dead-lettered ${n(p.deadLettered)}  ${n(p.rate)}/s  ` +
    (p.remaining === undefined ? "~? left" : `~${n(p.remaining)} left`);
}

/**
 * Live progress on one terminal line, redrawn in place; `clear` before anything else is
 * written to the same terminal, and the line comes back at the next tick.
 */
export function createProgressLine(
  stats: ConsumerStats,
  remaining: () => Promise<number>,
  write: (text: string) => void,
  everyMs = 250,
): ProgressLine {
  let shown = false;
  let last = { at: Date.now(), loaded: 0 };
  const progress: Progress = { loaded: 0, deadLettered: 0, rate: 0, remaining: undefined };
  const sample = setInterval(() => {
    const now = Date.now();
    progress.rate = ((stats.loaded - last.loaded) * 1000) / Math.max(1, now - last.at);
    last = { at: now, loaded: stats.loaded };
    remaining().then((count) => (progress.remaining = count), () => {});
  }, 1_000);
  const draw = setInterval(() => {
    progress.loaded = stats.loaded;
    progress.deadLettered = stats.deadLettered;
    write(`\r\x1b[2K${formatProgress(progress)}`);
    shown = true;
  }, everyMs);
  const clear = () => {
    if (shown) write("\r\x1b[2K");
    shown = false;
  };
  return {
    clear,
    stop() {
      clearInterval(sample);
      clearInterval(draw);
      clear();
    },
  };
}

// ---------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------

export const HELP = `Usage: sqs-login-masker [options]
       (from a checkout: npx tsx mod.ts [options], or deno run -A mod.ts [options])

Consume login events from SQS, mask ip and device_id, load them into Postgres (user_logins).

Options (flags > environment > defaults):
  --queue-url URL        source queue                               [env QUEUE_URL]
  --dlq-url URL          dead-letter queue for invalid messages      [env DLQ_URL]
                         (without it, or for a message too big for it, invalid
                         messages stay in the queue for SQS's own redrive policy,
                         and are counted and logged)
  --database-url URL     postgres://user:password@host:port/db       [env DATABASE_URL]
                         (percent-encode # / ? % in the password, or leave it out
                         of the URL and set PGPASSWORD)
  --strategy NAME|PATH   hmac (default), sha256, vault, ipcrypt, ipcrypt-pfx,
                         or a path to your own module
                                                                     [env MASK_STRATEGY]
  --drain                stop when the queue is empty (nothing visible or in flight);
                         without it, run until SIGINT/SIGTERM
  --batch-size N         rows per insert transaction (default ${DEFAULT_BATCH_SIZE})
  --concurrency N        receives in flight (default ${DEFAULT_CONCURRENCY})
  --max-in-flight-mb N   message bodies held in flight at most, in MiB: what bounds
                         memory with large bodies (default ${DEFAULT_MAX_IN_FLIGHT_MB})  [env MAX_IN_FLIGHT_MB]
  --batch-deadline S     seconds a batch may take to commit before it is abandoned and
                         its messages released for any consumer (default ${DEFAULT_BATCH_DEADLINE_SECONDS})
                                                                     [env BATCH_DEADLINE_SECONDS]
  --stop-grace S         seconds a stop waits for what is in flight before it releases
                         it to the queue (default ${DEFAULT_STOP_GRACE_SECONDS}); it exits within
                         S + ${STOP_MARGIN_SECONDS} s, so give orchestrators more     [env STOP_GRACE_SECONDS]
  --log-level LEVEL      debug, info, warn, error, silent (default info) [env LOG_LEVEL]
  --metrics-port N       serve Prometheus /metrics, /healthz and /readyz on port N
                                                                     [env METRICS_PORT]
  --metrics-host ADDR    address for the metrics port (default: every interface, as
                         a container needs; 127.0.0.1 keeps it local) [env METRICS_HOST]
  --version              print the version
  -h, --help             show this help

Strategies:
  hmac     HMAC-SHA-256 under MASK_HMAC_KEY (at least 32 bytes). Recommended.
  sha256   plain SHA-256 hex, identical to Python's hashlib.sha256(v.encode()).hexdigest(),
           kept only to stay joinable with data masked by the old Python tool. It is WEAK:
           an unsalted hash of an IPv4 address is reversed by hashing all 2^32 addresses,
           about an hour on one core.
  vault    deterministic token in the row; the original encrypted under VAULT_KEY in a
           vault table, recoverable with scripts/recover.ts by an authorised role.
           VAULT_KEY is at least 32 bytes; roles, rotation, erasure: docs/vault.md
  ipcrypt  ip encrypted with ipcrypt-deterministic (AES-128) under MASK_IPCRYPT_KEY
           (16 bytes, hex): still an address (IPv6), nothing about its network kept.
  ipcrypt-pfx
           ip encrypted prefix-preserving under MASK_IPCRYPT_KEY (32 bytes, hex, halves
           differ): IPv4 stays IPv4, and addresses sharing a /24 (any prefix) share it
           masked, so they are linkable at /24 by design.
           Both: device_id as hmac (MASK_HMAC_KEY); whoever holds MASK_IPCRYPT_KEY can
           decrypt every ip with scripts/ipcrypt.ts.
  An ip is masked in one canonical text: IPv6 as RFC 5952 writes it, an IPv4-mapped
  address as its IPv4 address.

AWS region, credentials and endpoint come from the SDK's default chain
(AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL for LocalStack or an emulator).

Exit codes: 0 done or stopped cleanly, 1 runtime failure, 2 usage or configuration error,
130 a second SIGINT/SIGTERM during a stop (exits at once; what was in flight comes back
after its visibility timeout).
`;

/** Print the one-line summary of a run to stdout. */
export function formatSummary(stats: ConsumerStats): string {
  const seconds = ((stats.finishedAt ?? Date.now()) - stats.startedAt) / 1000;
  const rate = seconds > 0 ? Math.round(stats.loaded / seconds) : 0;
  return `loaded=${stats.loaded} duplicates=${stats.duplicates} dead_lettered=${stats.deadLettered} ` +
    `left_in_queue=${stats.leftInQueue} released=${stats.released} retries=${stats.retries} seconds=${seconds.toFixed(2)} rate=${rate}/s`;
}

/** Describe any error thrown at start-up as one line, without a stack trace, with the hint that fixes it. */
export function describeStartupError(error: unknown, databaseUrl: string): string {
  if (error instanceof ConfigError || error instanceof FatalError) return error.message;
  if (errorChain(error).some((e) => e.name === "SchemaValidationError")) return `Unexpected row shape: ${describeDatabaseError(error)}`;
  const where = redactUrl(databaseUrl);
  const url = (() => {
    try {
      return new URL(databaseUrl);
    } catch {
      return undefined;
    }
  })();
  const messages = errorChain(error).map((e) => e.message).join("\n");
  // Slonik reads the URL's query with a schema: name the parameter and what it takes, not the value.
  const badParameter = (error as { name?: string; issues?: Array<{ path?: unknown[]; values?: unknown[] }> })?.name === "ZodError"
    ? (error as { issues: Array<{ path?: unknown[]; values?: unknown[] }> }).issues[0]
    : undefined;
  if (badParameter) {
    const takes = badParameter.values ? `: it takes ${badParameter.values.join(", ")}` : "";
    return `The URL's ${badParameter.path?.join(".") ?? "query"} parameter is not one the Postgres client takes${takes} (check --database-url)`;
  }
  if (errorChain(error).some((e) => e instanceof URIError)) {
    return `The password in ${where} holds a % that is not a percent-escape: write % as %25 (or leave the password out of the URL and set PGPASSWORD)`;
  }
  if (/client password must be a (non-empty )?string/.test(messages)) {
    // Slonik reads the password from the URL's userinfo only; pg falls back to PGPASSWORD.
    const ignored = url?.searchParams.has("password") ? " (a ?password= parameter is not read)" : "";
    return `Postgres at ${where} asks for a password and none was given: put it in the URL (postgres://user:PASSWORD@host/db, percent-encoded) or set PGPASSWORD${ignored}`;
  }
  const kind = classifyDatabaseError(error);
  const text = describeDatabaseError(error);
  // A connection that closes before any Postgres message: something else listens there.
  if (kind === "transient" && /Connection terminated unexpectedly/.test(messages) && !errorChain(error).some((e) => typeof e.code === "string")) {
    return `Something at ${where} hung up without speaking Postgres: is the port right? (Postgres listens on 5432 unless told otherwise; check --database-url)`;
  }
  if (kind === "transient") return `Cannot reach Postgres at ${where}: ${text} (is it running? check --database-url)`;
  if (/^28/.test(text)) return `Postgres refused the login at ${where}: ${text} (check the user and password)`;
  if (/^3D000/.test(text)) {
    const name = url ? decodeURIComponent(url.pathname.slice(1)) || "(none)" : "(unknown)";
    return `Database ${name} does not exist at ${where}: create it (CREATE DATABASE ${name}) or fix the name in the URL's path`;
  }
  if (/^42501/.test(text)) return `Permission denied at ${where}: ${text} (grant CREATE on the schema or create user_logins first)`;
  return `Postgres error at ${where}: ${text}`;
}

/** Young-generation size at which the command line stops V8 from growing it further. */
const YOUNG_GENERATION_CAP_BYTES = 16 * 1024 * 1024;
/** Old-generation growth between full collections, in percent of what survived the last. */
const OLD_GENERATION_GROWTH_PERCENT = 25;

/**
 * Keep V8's heap near what is live. V8 sizes it by the machine's memory (a 4.5 GB limit
 * here): a steady stream of short-lived receive buffers grew the young generation to 128 MB
 * and let the old one swell with promoted garbage, together most of a 330 MB peak RSS.
 * Heap sizes can no longer be set once Node runs, but growth can: old-generation growth is
 * capped at once, young-generation growth stopped once it reaches 16 MB. Measured
 * (`--trace-gc`, 100k messages): 8 MB took 530 scavenges and 1.2 s of the main thread,
 * 16 MB 250 and 0.8 s, 32 MB no fewer; peak RSS ~150 MB. Not done for library users:
 * their process, their heap.
 */
function boundHeap(): void {
  try {
    setFlagsFromString(`--heap-growing-percent=${OLD_GENERATION_GROWTH_PERCENT}`);
  } catch {
    return; // a runtime whose node:v8 lacks these keeps its own sizing; memory is not correctness
  }
  const timer = setInterval(() => {
    try {
      const young = getHeapSpaceStatistics().find((space) => space.space_name === "new_space");
      if (young && young.space_size < YOUNG_GENERATION_CAP_BYTES) return;
      setFlagsFromString("--semi-space-growth-factor=1");
    } catch {
      // As above: keep the runtime's own sizing.
    }
    clearInterval(timer);
  }, 20);
  timer.unref();
}

/**
 * The command line: parse, run, report. Writes to stdout and stderr and handles SIGINT and
 * SIGTERM; the installed `sqs-login-masker` command is this.
 *
 * @param argv the arguments after the program name
 * @param env the environment
 * @returns the exit code: 0 done, 1 runtime failure, 2 usage or configuration error
 */
export async function main(argv: readonly string[], env: Record<string, string | undefined>): Promise<number> {
  let config: Config;
  try {
    config = parseConfig(argv, env);
  } catch (error) {
    process.stderr.write(`error: ${(error as Error).message}\n`);
    return EXIT_USAGE;
  }
  if (config.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (config.version) {
    process.stdout.write(`sqs-login-masker ${VERSION}\n`);
    return 0;
  }
  boundHeap();
  const tty = process.stderr.isTTY === true;
  // The drain progress line shares the terminal with the log: clear it before each log line.
  let progress: ReturnType<typeof createProgressLine> | undefined;
  const logger = createLogger(config.logLevel, (line) => {
    progress?.clear();
    process.stderr.write(line + "\n");
  }, tty);
  let strategy: MaskStrategy;
  try {
    strategy = await loadStrategy(config.strategy, { env });
  } catch (error) {
    process.stderr.write(`error: ${(error as Error).message}\n`);
    return EXIT_USAGE;
  }
  const sqs = createSqsClient(logger);
  let pool: DatabasePool | undefined;
  let metricsServer: MetricsServer | undefined;
  let summary: ReturnType<typeof createBatchSummary> | undefined;
  try {
    // The queues and the database are checked side by side; a queue's error is told first.
    const [queueCheck, databaseSetup] = await Promise.allSettled([
      (async () => {
        const source = await inspectQueue(sqs, config.queueUrl, "--queue-url");
        const dlq = config.dlqUrl ? await inspectQueue(sqs, config.dlqUrl, "--dlq-url") : undefined;
        return { source, dlq };
      })(),
      (async () => {
        const db = pool = await createDatabasePool(config.databaseUrl, MAX_PARALLEL_WRITES + 2);
        await ensureSchema(db);
        await strategy.setup?.(db);
        return db;
      })(),
    ]);
    if (queueCheck.status === "rejected") throw queueCheck.reason;
    if (databaseSetup.status === "rejected") throw databaseSetup.reason;
    const { source: queue, dlq } = queueCheck.value;
    const db = databaseSetup.value;
    if (!queue.redrivePolicy) {
      logger.warn("the queue has no RedrivePolicy: an invalid message that cannot go to a DLQ (none set, or too big for it) " +
        "comes back after every visibility timeout until the queue's retention drops it; give the queue a RedrivePolicy " +
        "(maxReceiveCount) so that SQS moves such messages to a DLQ itself", { queue: redactUrl(config.queueUrl) });
    }
    const metrics = createMetrics();
    const batchSummary = summary = createBatchSummary(logger);
    const consumer = createConsumer({
      sqs, pool: db, strategy, logger,
      observer: {
        onBatch(report) {
          metrics.observer.onBatch(report);
          batchSummary.onBatch(report);
        },
        onRetry: metrics.observer.onRetry,
      },
      queueUrl: config.queueUrl,
      dlqUrl: config.dlqUrl,
      dlqMaxMessageBytes: dlq?.maximumMessageSize,
      drain: config.drain,
      batchSize: config.batchSize,
      concurrency: config.concurrency,
      maxInFlightBytes: config.maxInFlightMb * 1024 * 1024,
      visibilityTimeoutSeconds: queue.visibilityTimeoutSeconds,
      shutdownGraceMs: config.stopGraceSeconds * 1000,
      batchDeadlineMs: config.batchDeadlineSeconds * 1000,
    });
    let signals = 0;
    const onSignal = (signal: string) => {
      signals++;
      if (signals === 1) {
        logger.info("stop requested; a second signal exits at once (code 130)", { signal });
        consumer.stop();
      } else {
        // Nothing is lost: unacknowledged messages return to the queue after their timeout.
        logger.warn("second signal: exiting now", { signal });
        process.exit(EXIT_SECOND_SIGNAL);
      }
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    if (config.metricsPort !== undefined) {
      metricsServer = await startMetricsServer(config.metricsPort, () => metrics.render(consumer.stats, consumer.inFlight, consumer.inFlightBytes),
        createReadinessChecks(db, sqs, config.queueUrl), config.metricsHost);
    }
    logger.info("consuming", {
      queue: redactUrl(config.queueUrl), dlq: config.dlqUrl ? redactUrl(config.dlqUrl) : "none", strategy: strategy.name, drain: config.drain,
      batch_size: config.batchSize, concurrency: config.concurrency, max_in_flight_mb: config.maxInFlightMb,
      stop_grace_s: config.stopGraceSeconds, metrics_port: metricsServer?.port,
    });
    if (config.drain && tty) {
      progress = createProgressLine(consumer.stats, () => queueDepthVisible(sqs, config.queueUrl), (text) => process.stderr.write(text));
    }
    const stats = await consumer.run();
    progress?.stop();
    batchSummary.stop();
    process.stdout.write(formatSummary(stats) + "\n");
    return 0;
  } catch (error) {
    const isConfig = error instanceof ConfigError;
    process.stderr.write(`error: ${describeStartupError(error, config.databaseUrl)}\n`);
    return isConfig ? EXIT_USAGE : EXIT_FAILURE;
  } finally {
    progress?.stop();
    summary?.stop();
    await metricsServer?.close();
    // Closing waits for each connection's goodbye, which a half-open one never sends: bounded.
    await withTimeout(pool?.end() ?? Promise.resolve(), CLEANUP_WAIT_MS).catch(() => {});
    sqs.destroy();
  }
}

/** Closing the pool at exit, at most. */
const CLEANUP_WAIT_MS = 1_000;
/** After main returns, what is still open (a half-open socket no goodbye closes) may hold the process this long. */
const EXIT_WAIT_MS = 2_000;

async function queueDepthVisible(sqs: SQSClient, queueUrl: string): Promise<number> {
  const { Attributes = {} } = await boundedSqsCall((options) => sqs.send(new GetQueueAttributesCommand({
    QueueUrl: queueUrl, AttributeNames: ["ApproximateNumberOfMessages"],
  }), options));
  return Number(Attributes.ApproximateNumberOfMessages ?? 0);
}

if (import.meta.main) {
  // Not a top-level await: a strategy module that imports this file (strategies/vault.ts
  // does) would wait for this module to finish evaluating while main() waits for it.
  void main(process.argv.slice(2), process.env).then((code) => {
    process.exitCode = code;
    // Normally the process ends here by itself. A socket that never closes (its peer gone)
    // must not keep it: exit anyway, a moment later, without holding it open for that.
    const exitAnyway = setTimeout(() => process.exit(code), EXIT_WAIT_MS) as unknown;
    if (typeof exitAnyway === "number") (globalThis as { Deno?: { unrefTimer(id: number): void } }).Deno?.unrefTimer(exitAnyway);
    else (exitAnyway as { unref(): void }).unref();
  });
}
