/**
 * Dead-letter entries and SQS's size limits: an entry is the body unchanged with why it was
 * refused and where it came from, its reason shortened to fit beside the body, and entries
 * grouped so that no batch call exceeds what SQS takes.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import type { Message, MessageAttributeValue } from "@aws-sdk/client-sqs";
import { SQS_MAX_BATCH, SQS_MAX_BATCH_BYTES } from "./sqs.ts";

/** A dead-letter reason is cut to this many bytes at most. */
const MAX_REASON_BYTES = 1_000;
/** Characters SQS accepts in a message or attribute (as the emulator checks: the BMP only). */
// deno-lint-ignore no-control-regex -- control characters are what it finds
const NOT_SQS_TEXT = /[^\x09\x0A\x0D\x20-\uD7FF\uE000-\uFFFD]/g;

/** SQS takes at most this many attributes on a message; the tool's own are three. */
const MAX_ATTRIBUTES = 10;
/** The attributes the tool adds to a dead-letter entry. */
const OWN_ATTRIBUTES = ["invalid_reason", "source_message_id", "source_sent_timestamp"];

/** A dead-letter entry ready to send, and the bytes SQS counts for it. */
export interface DeadLetterEntry {
  entry: {
    MessageBody: string;
    MessageAttributes: Record<string, MessageAttributeValue>;
    /** For a FIFO DLQ: the source message's group (its own id when the source is standard). */
    MessageGroupId?: string;
    /** For a FIFO DLQ: one per source message, so a retried send is the same entry. */
    MessageDeduplicationId?: string;
  };
  bytes: number;
}

/** The bytes SQS counts for an attribute: its name, its type and its value. */
function attributeBytes(name: string, value: MessageAttributeValue): number {
  return utf8Bytes(name) + utf8Bytes(value.DataType ?? "") +
    (value.StringValue !== undefined ? utf8Bytes(value.StringValue) : value.BinaryValue?.byteLength ?? 0);
}

/**
 * The source message's own attributes that fit beside the tool's three, first by name (SQS
 * takes ten), so that a redrive puts back what came in; the names of any left out.
 */
function sourceAttributes(message: Message): { kept: Record<string, MessageAttributeValue>; dropped: string[] } {
  const names = Object.keys(message.MessageAttributes ?? {}).filter((n) => !OWN_ATTRIBUTES.includes(n)).sort();
  const room = MAX_ATTRIBUTES - OWN_ATTRIBUTES.length;
  const kept: Record<string, MessageAttributeValue> = {};
  for (const name of names.slice(0, room)) {
    const { DataType, StringValue, BinaryValue } = message.MessageAttributes![name]!;
    kept[name] = { DataType, ...(StringValue !== undefined ? { StringValue } : { BinaryValue }) };
  }
  return { kept, dropped: names.slice(room) };
}

/**
 * The dead-letter entry of a message: the body unchanged, why it was refused, and where it
 * came from. SQS counts the body and every attribute's name, type and value against the
 * DLQ's limit, so the reason is shortened to fit beside the body.
 *
 * @param maxBytes the DLQ's `MaximumMessageSize`, at most SQS's 1 MiB
 * @returns the entry, or undefined when the body leaves no room even for a shortened reason
 */
export function fitDeadLetterEntry(
  message: Message,
  reason: string,
  maxBytes = SQS_MAX_BATCH_BYTES,
  fifo = false,
): DeadLetterEntry | undefined {
  const MessageBody = message.Body || "(empty body)";
  const sourceId = message.MessageId ?? "";
  const sentTimestamp = message.Attributes?.SentTimestamp ?? "0";
  const { kept, dropped } = sourceAttributes(message);
  const fullReason = dropped.length === 0 ? reason : `${reason} (source attributes left out: ${dropped.join(", ")})`;
  const keptBytes = Object.entries(kept).reduce((sum, [name, value]) => sum + attributeBytes(name, value), 0);
  const withoutReason = utf8Bytes(MessageBody) + utf8Bytes("invalid_reason") + utf8Bytes("String") +
    utf8Bytes("source_message_id") + utf8Bytes("String") + utf8Bytes(sourceId) +
    utf8Bytes("source_sent_timestamp") + utf8Bytes("Number") + utf8Bytes(sentTimestamp) + keptBytes;
  const room = Math.min(Math.min(maxBytes, SQS_MAX_BATCH_BYTES) - withoutReason, MAX_REASON_BYTES);
  const shown = cutToBytes(fullReason.replace(NOT_SQS_TEXT, "?"), room);
  if (shown === "") return undefined;
  return {
    entry: {
      MessageBody,
      MessageAttributes: {
        ...kept,
        invalid_reason: { DataType: "String", StringValue: shown },
        source_message_id: { DataType: "String", StringValue: sourceId },
        source_sent_timestamp: { DataType: "Number", StringValue: sentTimestamp },
      },
      // A FIFO DLQ takes nothing without a group. The source's group keeps the entries of one
      // group in their order there; the source's id and sequence number make the same entry
      // of a retried send (SQS drops a repeat within five minutes).
      ...(fifo && {
        MessageGroupId: message.Attributes?.MessageGroupId ?? sourceId,
        MessageDeduplicationId: [sourceId, message.Attributes?.SequenceNumber].filter(Boolean).join("-"),
      }),
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
 * which would stop the tool.
 */
export function chunkByBytes<T>(
  items: readonly T[],
  bytesOf: (item: T) => number,
  maxBytes = SQS_MAX_BATCH_BYTES,
): T[][] {
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

/** Split into groups of `size`: SQS takes ten entries per batch call. */
export function chunk<T>(items: readonly T[], size: number): T[][] {
  const chunks: T[][] = [];
  for (let i = 0; i < items.length; i += size) chunks.push(items.slice(i, i + size));
  return chunks;
}
