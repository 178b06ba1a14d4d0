/**
 * The baseline the tool is measured against: one message, one connection, one insert at a
 * time. (The ceiling runs as its own process: `ceiling.ts`.)
 *
 * @module
 */
import { DeleteMessageCommand, ReceiveMessageCommand } from "@aws-sdk/client-sqs";
import { hmacSha256Hex } from "../../strategies/hmac.ts";
import { emulatorClient } from "../embedded.ts";
import { BENCH_HMAC_KEY } from "./options.ts";

/** The little of `pg` the baseline uses (the package ships no types of its own). */
interface PgClient {
  connect(): Promise<void>;
  query(text: string, values: unknown[]): Promise<unknown>;
  end(): Promise<void>;
}

/**
 * The way a first version works: receive one, connect with the plain driver, insert,
 * disconnect, delete one. It parses and masks like the tool, so only the plumbing differs.
 */
export async function runBaseline(
  endpoint: string,
  queueUrl: string,
  databaseUrl: string,
  n: number,
): Promise<{ done: number; seconds: number }> {
  const driver = "pg"; // a variable, so the type checker does not look for types pg lacks
  const { default: pg } = await import(driver) as {
    default: { Client: new (options: { connectionString: string }) => PgClient };
  };
  const connect = async () => {
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    return client;
  };
  const setup = await connect();
  await setup.query(
    `
    CREATE TABLE IF NOT EXISTS user_logins(
      user_id varchar(128), device_type varchar(32), masked_ip varchar(256),
      masked_device_id varchar(256), locale varchar(32), app_version integer, create_date date)`,
    [],
  );
  await setup.end();
  const sqs = emulatorClient(endpoint);
  const key = new TextEncoder().encode(BENCH_HMAC_KEY);
  let done = 0;
  const started = performance.now();
  while (done < n) {
    const { Messages = [] } = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: queueUrl,
        MaxNumberOfMessages: 1,
        WaitTimeSeconds: 0,
        MessageSystemAttributeNames: ["SentTimestamp"],
      }),
    );
    const message = Messages[0];
    if (!message) break;
    const body = JSON.parse(message.Body!);
    const [major, minor, patch] = String(body.app_version).split(".").map(Number) as [number, number, number];
    const client = await connect();
    try {
      await client.query("INSERT INTO user_logins VALUES ($1, $2, $3, $4, $5, $6, $7)", [
        body.user_id,
        body.device_type,
        hmacSha256Hex(key, body.ip),
        hmacSha256Hex(key, body.device_id),
        body.locale ?? null,
        major * 10_000 + minor * 100 + patch,
        new Date(Number(message.Attributes!.SentTimestamp)).toISOString().slice(0, 10),
      ]);
    } finally {
      await client.end();
    }
    await sqs.send(new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: message.ReceiptHandle! }));
    done++;
  }
  const seconds = (performance.now() - started) / 1000;
  sqs.destroy();
  return { done, seconds };
}
