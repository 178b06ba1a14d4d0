/**
 * What the per-message consumers the tool is measured against do with one message: the
 * baseline (`clients.ts`) and sqs-consumer (`sqs-consumer.ts`) share it, so the two differ only
 * in how they receive, connect and delete. Parse, mask both fields, one plain insert: no
 * validation, no exactly-once, no dead-letter queue.
 *
 * @module
 */
import type { Message } from "@aws-sdk/client-sqs";

/** The table both write to: the contract's columns without its keys and constraints. */
export const PER_MESSAGE_TABLE = `
  CREATE TABLE IF NOT EXISTS user_logins(
    user_id varchar(128), device_type varchar(32), masked_ip varchar(256),
    masked_device_id varchar(256), locale varchar(32), app_version integer, create_date date)`;

export const PER_MESSAGE_INSERT = "INSERT INTO user_logins VALUES ($1, $2, $3, $4, $5, $6, $7)";

/** The insert's values for one message (received with its `SentTimestamp`). */
export function perMessageRow(message: Message, mask: (value: string) => string): unknown[] {
  const body = JSON.parse(message.Body!);
  const [major, minor, patch] = String(body.app_version).split(".").map(Number) as [number, number, number];
  return [
    body.user_id,
    body.device_type,
    mask(body.ip),
    mask(body.device_id),
    body.locale ?? null,
    major * 10_000 + minor * 100 + patch,
    new Date(Number(message.Attributes!.SentTimestamp)).toISOString().slice(0, 10),
  ];
}

/** The little of `pg` these use (the package ships no types of its own). */
export interface PgClient {
  connect(): Promise<void>;
  query(text: string, values: unknown[]): Promise<unknown>;
  end(): Promise<void>;
}

export interface PgModule {
  Client: new (options: { connectionString: string }) => PgClient;
  Pool: new (options: { connectionString: string; max: number }) => Omit<PgClient, "connect">;
}

/** `pg`, loaded by a name the type checker does not look up (it has no types of its own). */
export async function loadPg(): Promise<PgModule> {
  const driver = "pg";
  return (await import(driver) as { default: PgModule }).default;
}
