/**
 * FIFO queues end to end, on the emulator's FIFO queues: a FIFO source with a FIFO DLQ (with
 * and without SQS's redrive policy to it) and with a standard DLQ. Every valid message loads
 * once, in its group's order; every invalid one reaches the DLQ once, with its group and
 * its own attributes, and never blocks the messages of its group behind it.
 */
import { randomBytes } from "node:crypto";
import { GetQueueAttributesCommand, type Message, SendMessageBatchCommand } from "@aws-sdk/client-sqs";
import { sql } from "slonik";
import { afterEach, describe, expect, inject, it } from "vitest";
import { ensureSchema } from "../mod.ts";
import { attachEmulator } from "../scripts/embedded.ts";
import { INVALID_BODIES, sampleBodies } from "../scripts/produce.ts";
import { createFixture, type Fixture, queueDepth, receiveAll, runTool } from "./helpers.ts";

const GROUPS = ["g-a", "g-b", "g-c"];
const PER_GROUP = 30;

let f: Fixture | undefined;
afterEach(async () => {
  await f?.close();
  f = undefined;
});

interface Sent {
  group: string;
  /** Its place in its group. */
  seq: number;
  body: string;
  valid: boolean;
}

/** Make the source (FIFO) and the DLQ (FIFO or standard), with or without a redrive policy. */
async function fifoQueues(fx: Fixture, dlqKind: "fifo" | "standard", maxReceiveCount?: number) {
  const emulator = attachEmulator(inject("sqsEndpoint"), "us-east-1", async () => {});
  const id = randomBytes(4).toString("hex");
  const dlqUrl = await emulator.createQueue(
    dlqKind === "fifo" ? `fifo-${id}-dlq.fifo` : `fifo-${id}-dlq`,
    dlqKind === "fifo" ? { FifoQueue: "true" } : {},
  );
  const attributes: Record<string, string> = { FifoQueue: "true", VisibilityTimeout: "30" };
  if (maxReceiveCount !== undefined) {
    const { Attributes = {} } = await fx.sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: dlqUrl, AttributeNames: ["QueueArn"] }),
    );
    attributes.RedrivePolicy = JSON.stringify({ deadLetterTargetArn: Attributes.QueueArn, maxReceiveCount });
  }
  const queueUrl = await emulator.createQueue(`fifo-${id}.fifo`, attributes);
  await emulator.stop();
  return { queueUrl, dlqUrl };
}

/** Three groups of valid logins, an invalid message early in each, each message with an attribute of its own. */
async function sendGroups(fx: Fixture, queueUrl: string): Promise<Sent[]> {
  const valid = sampleBodies(GROUPS.length * PER_GROUP, 0, 1919);
  const sent: Sent[] = [];
  GROUPS.forEach((group, g) => {
    for (let seq = 0; seq < PER_GROUP; seq++) {
      // The third message of every group is invalid: it must not hold back the 27 behind it.
      const invalid = seq === 2 ? INVALID_BODIES[g % INVALID_BODIES.length]!.body || "not json" : undefined;
      sent.push({ group, seq, body: invalid ?? valid[g * PER_GROUP + seq]!, valid: invalid === undefined });
    }
  });
  for (let i = 0; i < sent.length; i += 10) {
    await fx.sqs.send(
      new SendMessageBatchCommand({
        QueueUrl: queueUrl,
        Entries: sent.slice(i, i + 10).map((m, j) => ({
          Id: String(j),
          MessageBody: m.body,
          MessageGroupId: m.group,
          MessageDeduplicationId: `${m.group}-${m.seq}`,
          MessageAttributes: {
            trace_id: { DataType: "String", StringValue: `trace-${m.group}-${m.seq}` },
          },
        })),
      }),
    );
  }
  return sent;
}

/** Rows are committed in each group's order: a later message never commits before an earlier one. */
async function expectGroupOrder(fx: Fixture, sent: readonly Sent[]): Promise<void> {
  // A group's messages come one receive at a time (SQS holds a group while any of its
  // messages is in flight), so their transactions follow each other: the transaction id that
  // wrote a row orders them.
  const committed = new Map(
    (await fx.pool.any(sql.unsafe`SELECT user_id, xmin::text::bigint AS tx FROM user_logins`) as ReadonlyArray<
      { user_id: string; tx: string | number }
    >).map((r) => [r.user_id, Number(r.tx)]),
  );
  for (const group of GROUPS) {
    const txs = sent.filter((m) => m.group === group && m.valid).map((m) => committed.get(JSON.parse(m.body).user_id));
    expect(txs.every((tx) => tx !== undefined), group).toBe(true);
    for (let i = 1; i < txs.length; i++) expect(txs[i]!, group).toBeGreaterThanOrEqual(txs[i - 1]!);
  }
}

async function drain(fx: Fixture, queueUrl: string, dlqUrl: string) {
  const run = await runTool(["--drain", "--strategy", "sha256"], { ...fx.env, QUEUE_URL: queueUrl, DLQ_URL: dlqUrl });
  expect(run.stderr).not.toMatch(/^error/m);
  expect(run.code, run.stderr.slice(-800)).toBe(0);
  return run;
}

function expectDeadLettered(dead: readonly Message[], sent: readonly Sent[], fifoDlq: boolean): void {
  const invalid = sent.filter((m) => !m.valid);
  expect(dead).toHaveLength(invalid.length);
  for (const m of dead) {
    const trace = m.MessageAttributes?.trace_id?.StringValue ?? "";
    const source = invalid.find((s) => trace === `trace-${s.group}-${s.seq}`);
    // The source's own attribute rides along, beside the tool's reason.
    expect(source, trace).toBeDefined();
    expect(m.MessageAttributes?.invalid_reason?.StringValue).toMatch(/\S/);
    if (fifoDlq) expect(m.Attributes?.MessageGroupId).toBe(source!.group);
  }
}

describe("a FIFO queue", { timeout: 120_000 }, () => {
  for (const redrive of [2, undefined]) {
    it(`with a FIFO DLQ ${redrive ? "its redrive policy targets" : "and no redrive policy"}: every valid message once, in its group's order; every invalid one in the DLQ with its group`, async () => {
      f = await createFixture();
      const fx = f;
      await ensureSchema(fx.pool);
      const { queueUrl, dlqUrl } = await fifoQueues(fx, "fifo", redrive);
      const sent = await sendGroups(fx, queueUrl);
      const run = await drain(fx, queueUrl, dlqUrl);
      const valid = sent.filter((m) => m.valid).length;
      expect(run.stdout).toMatch(
        new RegExp(`^loaded=${valid} duplicates=0 dead_lettered=${sent.length - valid} `, "m"),
      );
      expect(await fx.pool.oneFirst(sql.unsafe`SELECT count(DISTINCT user_id)::int FROM user_logins`)).toBe(valid);
      expect(await queueDepth(fx.sqs, queueUrl)).toBe(0);
      await expectGroupOrder(fx, sent);
      expectDeadLettered(await receiveAll(fx.sqs, dlqUrl), sent, true);
      // FIFO on both sides: nothing to warn about.
      expect(run.stderr).not.toMatch(/the queue is FIFO and the DLQ/);
    });
  }

  it("with a standard DLQ: loads everything, dead-letters with the source's attributes, and says at start what the mismatch means", async () => {
    f = await createFixture();
    const fx = f;
    await ensureSchema(fx.pool);
    const { queueUrl, dlqUrl } = await fifoQueues(fx, "standard");
    const sent = await sendGroups(fx, queueUrl);
    const run = await drain(fx, queueUrl, dlqUrl);
    const valid = sent.filter((m) => m.valid).length;
    expect(await fx.pool.oneFirst(sql.unsafe`SELECT count(DISTINCT user_id)::int FROM user_logins`)).toBe(valid);
    await expectGroupOrder(fx, sent);
    expectDeadLettered(await receiveAll(fx.sqs, dlqUrl), sent, false);
    const warnings = run.stderr.split("\n").filter((l) => l.includes("the queue is FIFO and the DLQ standard"));
    expect(warnings).toHaveLength(1);
  });
});
