/**
 * The usual way to consume SQS in Node: `sqs-consumer` (bbc/sqs-consumer), several instances
 * on one queue, each receiving up to 10 messages, handling them one by one in parallel and
 * deleting each with its own call; every message one insert through a shared `pg` pool. The
 * bench runs it as its own process, timed and measured as the tool is.
 *
 * ```sh
 * node scripts/bench/sqs-consumer.ts <queue url> <messages> <instances> <database url>
 * ```
 *
 * It reads the endpoint, region and keys from the environment, as the tool does, and the HMAC
 * key from `MASK_HMAC_KEY`; it prints `{"done": N}` once N messages are handled.
 *
 * @module
 */
import { createHmac, createSecretKey } from "node:crypto";
import { SQSClient } from "@aws-sdk/client-sqs";
import { Consumer } from "sqs-consumer";
import { loadPg, PER_MESSAGE_INSERT, PER_MESSAGE_TABLE, perMessageRow } from "./per-message.ts";

/** Handle `n` messages with `instances` consumers; resolves with how many were handled. */
export async function drainWithSqsConsumer(
  sqs: SQSClient,
  queueUrl: string,
  n: number,
  instances: number,
  databaseUrl: string,
  hmacKey: string,
): Promise<number> {
  const pg = await loadPg();
  const pool = new pg.Pool({ connectionString: databaseUrl, max: instances * 10 });
  await pool.query(PER_MESSAGE_TABLE, []);
  // A key object made once, as the tool does: the competitor gets the fast HMAC too.
  const key = createSecretKey(Buffer.from(hmacKey));
  const mask = (value: string) => createHmac("sha256", key).update(value).digest("hex");
  let done = 0;
  let finish: () => void;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  const consumers = Array.from({ length: instances }, () =>
    Consumer.create({
      queueUrl,
      sqs,
      batchSize: 10,
      waitTimeSeconds: 1,
      messageSystemAttributeNames: ["SentTimestamp"],
      handleMessage: async (message) => {
        await pool.query(PER_MESSAGE_INSERT, perMessageRow(message, mask));
        return message;
      },
    }));
  for (const consumer of consumers) {
    consumer.on("message_processed", () => {
      if (++done >= n) finish();
    });
    const report = (error: Error) => void process.stderr.write(`sqs-consumer: ${error.message}\n`);
    consumer.on("error", report);
    consumer.on("processing_error", report);
    consumer.start();
  }
  await finished;
  for (const consumer of consumers) consumer.stop({ abort: true });
  await pool.end();
  return done;
}

if (import.meta.main) {
  const [queueUrl, n, instances, databaseUrl] = process.argv.slice(2);
  const hmacKey = process.env.MASK_HMAC_KEY;
  if (!queueUrl || !n || !instances || !databaseUrl || !hmacKey) {
    process.stderr.write(
      "usage: MASK_HMAC_KEY=... node scripts/bench/sqs-consumer.ts <queue url> <messages> <instances> <database url>\n",
    );
    process.exit(2);
  }
  const sqs = new SQSClient({});
  const done = await drainWithSqsConsumer(sqs, queueUrl, Number(n), Number(instances), databaseUrl, hmacKey);
  sqs.destroy();
  process.stdout.write(JSON.stringify({ done }) + "\n");
}
