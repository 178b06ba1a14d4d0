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
import { loadPg, PER_MESSAGE_INSERT, PER_MESSAGE_TABLE, perMessageRow } from "./per-message.ts";

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
  const pg = await loadPg();
  const connect = async () => {
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    return client;
  };
  const setup = await connect();
  await setup.query(PER_MESSAGE_TABLE, []);
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
    const row = perMessageRow(message, (value) => hmacSha256Hex(key, value));
    const client = await connect();
    try {
      await client.query(PER_MESSAGE_INSERT, row);
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
