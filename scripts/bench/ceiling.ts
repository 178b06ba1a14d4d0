/**
 * The ceiling as its own process: a bare SDK client that receives 10 at a time with several
 * receives in flight and deletes in batches of 10, nothing else. The bench runs it as it runs
 * the tool (a child, timed from spawn to exit, its CPU from /proc), so the two differ only in
 * what each does per message: start-up, heap and the garbage of staging the queue are no
 * longer the bench's own and no longer charged to one side only.
 *
 * ```sh
 * node scripts/bench/ceiling.ts <queue url> <messages> <receives in flight>
 * ```
 *
 * It reads the endpoint, region and keys from the environment, as the tool does, and prints
 * `{"done": N}`. It imports the SDK and nothing of the project, so it starts as fast as a bare
 * client can.
 *
 * @module
 */
import {
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SQSClient,
} from "@aws-sdk/client-sqs";

/** Messages still in the queue, visible, in flight or delayed. */
async function queueDepth(sqs: SQSClient, queueUrl: string): Promise<number> {
  const { Attributes = {} } = await sqs.send(
    new GetQueueAttributesCommand({
      QueueUrl: queueUrl,
      AttributeNames: [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
      ],
    }),
  );
  return Object.values(Attributes).reduce((sum, value) => sum + Number(value), 0);
}

/** Drain `n` messages with `concurrency` loops of receive 10, delete 10. */
export async function drainBare(sqs: SQSClient, queueUrl: string, n: number, concurrency: number): Promise<number> {
  let done = 0;
  async function loop(): Promise<void> {
    while (done < n) {
      const { Messages = [] } = await sqs.send(
        new ReceiveMessageCommand({
          QueueUrl: queueUrl,
          MaxNumberOfMessages: 10,
          WaitTimeSeconds: 0,
          MessageSystemAttributeNames: ["SentTimestamp"],
        }),
      );
      if (Messages.length === 0) {
        // Others may still hold the last messages; stop once nothing is left anywhere.
        if (await queueDepth(sqs, queueUrl) === 0) return;
        continue;
      }
      const result = await sqs.send(
        new DeleteMessageBatchCommand({
          QueueUrl: queueUrl,
          Entries: Messages.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle! })),
        }),
      );
      done += Messages.length - (result.Failed?.length ?? 0);
    }
  }
  await Promise.all(Array.from({ length: concurrency }, loop));
  return done;
}

if (import.meta.main) {
  const [queueUrl, n, concurrency] = process.argv.slice(2);
  if (!queueUrl || !n || !concurrency) {
    process.stderr.write("usage: node scripts/bench/ceiling.ts <queue url> <messages> <receives in flight>\n");
    process.exit(2);
  }
  const sqs = new SQSClient({});
  const done = await drainBare(sqs, queueUrl, Number(n), Number(concurrency));
  sqs.destroy();
  process.stdout.write(JSON.stringify({ done }) + "\n");
}
