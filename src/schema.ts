/**
 * What a login message is and what a row of `user_logins` is: one TypeBox schema each,
 * built from the same column limits, and the decoding of an SQS message into a validated
 * record. `varchar(n)` counts characters, so the text limits do too; an IP address is
 * kept in one canonical text so that equal addresses mask equal.
 *
 * @module
 */
import type { Message } from "@aws-sdk/client-sqs";
import {
  FormatRegistry,
  Kind,
  type Static,
  type TInteger,
  type TObject,
  type TOptional,
  type TString,
  type TUnsafe,
  Type,
  TypeRegistry,
} from "@sinclair/typebox";
import { TypeCompiler } from "@sinclair/typebox/compiler";
import { type QuerySqlToken, sql, type ValueExpression } from "slonik";
import type { StandardSchemaV1 } from "@standard-schema/spec";
import { canonicalIp, isIpAddress } from "./ip.ts";
import { toStandardSchema } from "./typed-sql.ts";

// The same parser that writes the address canonically (src/ip.ts) decides what is one.
FormatRegistry.Set("ip", isIpAddress);

/** The limits of a text column: `varchar(n)` counts characters (code points), not UTF-16 units. */
export interface TextLimits {
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
export function textProblem(value: unknown, { minChars, maxChars, nullable }: TextLimits): string | undefined {
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

const checkLoginMessage = TypeCompiler.Compile(LoginMessage);

/** Typed SQL: Slonik checks every row these queries return against the schema. */
export const sqlUserLoginRow: (
  template: TemplateStringsArray,
  ...values: ValueExpression[]
) => QuerySqlToken<StandardSchemaV1<UserLoginRow, UserLoginRow>> = sql.type(toStandardSchema(UserLoginRow));
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
