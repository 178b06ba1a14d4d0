/**
 * The SQS source on its own: an in-memory SQS and a fake handler, no service. Batching,
 * acknowledging, dead-lettering, waiting out a handler's faults, the heartbeat, the two
 * stages of a stop, the byte bound and drain detection, each in a second or two.
 */
import { ReceiveMessageCommand, RequestThrottled } from "@aws-sdk/client-sqs";
import { describe, expect, it } from "vitest";
import { createSqsSource } from "../../src/consumer/source.ts";
import type { SourceOptions } from "../../src/consumer/options.ts";
import { FatalError } from "../../src/errors.ts";
import { createFakeHandler, type FakeHandler } from "./fake-handler.ts";
import { InMemorySqs } from "./in-memory-sqs.ts";

interface Setup {
  sqs: InMemorySqs;
  queueUrl: string;
  dlqUrl: string;
  handler: FakeHandler;
}

function setup(queueName = "logins"): Setup {
  const sqs = new InMemorySqs();
  return {
    sqs,
    queueUrl: sqs.createQueue(queueName),
    dlqUrl: sqs.createQueue("logins-dlq"),
    handler: createFakeHandler(),
  };
}

function source(s: Setup, options: Partial<SourceOptions> = {}) {
  return createSqsSource({
    sqs: s.sqs.client,
    queueUrl: s.queueUrl,
    dlqUrl: s.dlqUrl,
    handler: s.handler,
    drain: true,
    visibilityTimeoutSeconds: 30,
    ...options,
  });
}

const ids = (n: number, prefix = "m") => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
const enqueueAll = (s: Setup, list: readonly string[]) =>
  list.forEach((id) => s.sqs.enqueue(s.queueUrl, JSON.stringify({ id })));
const callsOf = (s: Setup, name: string) => s.sqs.calls.filter((c) => c.name === name);

describe("batching and acknowledging", () => {
  it("writes every message once in batches of at most batchSize, deletes them, and ends when drained", async () => {
    const s = setup();
    enqueueAll(s, ids(95));
    const stats = await source(s, { batchSize: 20 }).run();
    expect([...s.handler.written].sort()).toEqual(ids(95).sort());
    expect(Math.max(...s.handler.batches.map((b) => b.length))).toBeLessThanOrEqual(20);
    expect(stats).toMatchObject({ received: 95, loaded: 95, duplicates: 0, deadLettered: 0, released: 0 });
    expect(s.sqs.view(s.queueUrl).bodies()).toEqual([]);
    // Deletes go ten to a call.
    for (const call of callsOf(s, "DeleteMessageBatchCommand")) {
      expect((call.input as { Entries: unknown[] }).Entries.length).toBeLessThanOrEqual(10);
    }
  });

  it("sends an invalid message to the DLQ with its reason, and deletes it from the queue", async () => {
    const s = setup();
    enqueueAll(s, ids(5));
    s.sqs.enqueue(s.queueUrl, "not json");
    const stats = await source(s).run();
    expect(stats).toMatchObject({ loaded: 5, deadLettered: 1, leftInQueue: 0 });
    const [dead] = s.sqs.view(s.dlqUrl).messages();
    expect(dead!.body).toBe("not json");
    expect(JSON.stringify(dead!.attributes)).toContain("body: not {id}");
    expect(s.sqs.view(s.queueUrl).bodies()).toEqual([]);
  });

  it("leaves an invalid message in the queue without a DLQ, and still ends the drain", async () => {
    const s = setup();
    enqueueAll(s, ids(3));
    s.sqs.enqueue(s.queueUrl, "{}");
    const stats = await source(s, { dlqUrl: undefined }).run();
    expect(stats).toMatchObject({ loaded: 3, deadLettered: 0, leftInQueue: 1 });
    // Handed back at the end: visible for the queue's own redrive policy.
    expect(s.sqs.view(s.queueUrl).bodies()).toEqual(["{}"]);
    expect(s.sqs.view(s.queueUrl).visible()).toBe(1);
  });

  it("dead-letters only what the handler refused, and deletes the rest of its batch", async () => {
    const s = setup();
    enqueueAll(s, ids(10));
    s.handler.refuse.add("m3");
    const stats = await source(s).run();
    expect(stats).toMatchObject({ loaded: 9, deadLettered: 1 });
    expect(s.sqs.view(s.dlqUrl).bodies()).toEqual([JSON.stringify({ id: "m3" })]);
    expect(s.sqs.view(s.queueUrl).bodies()).toEqual([]);
  });

  it("counts a redelivered message as a duplicate, written once", async () => {
    const s = setup();
    enqueueAll(s, ["a", "b", "a"]);
    const stats = await source(s).run();
    expect(s.handler.written).toEqual(["a", "b"]);
    expect(stats).toMatchObject({ loaded: 2, duplicates: 1 });
  });

  it("never splits a FIFO receive across batches", async () => {
    const s = setup("logins.fifo");
    for (const id of ids(30)) s.sqs.enqueue(s.queueUrl, JSON.stringify({ id }), { groupId: "g" });
    await source(s, { batchSize: 3, concurrency: 1 }).run();
    expect(s.handler.written).toEqual(ids(30));
    // A receive brings up to ten of the group at once; each batch holds one whole receive.
    expect(s.handler.batches.some((b) => b.length > 3)).toBe(true);
  });
});

describe("faults the handler reports", () => {
  it("waits out transient faults, pausing receives, then writes everything", async () => {
    const s = setup();
    enqueueAll(s, ids(40));
    s.handler.transientFaults = 3;
    const stats = await source(s, { batchSize: 10 }).run();
    expect([...s.handler.written].sort()).toEqual(ids(40).sort());
    expect(stats.retries).toBeGreaterThanOrEqual(3);
    expect(stats.loaded).toBe(40);
  });

  it("stops on a fatal fault with the handler's one line, and hands every message back", async () => {
    const s = setup();
    enqueueAll(s, ids(12));
    s.handler.fatalFault = new Error("column gone");
    const run = source(s, { batchSize: 50 }).run();
    await expect(run).rejects.toThrow(FatalError);
    await expect(run).rejects.toThrow("Fake refused: column gone");
    expect(s.handler.written).toEqual([]);
    expect(s.sqs.view(s.queueUrl).visible()).toBe(12);
  });

  it("releases a batch past its deadline for any consumer, and writes it when it comes back", async () => {
    const s = setup();
    enqueueAll(s, ids(5));
    s.handler.hang = true;
    const consumer = source(s, { batchDeadlineMs: 300 });
    setTimeout(() => (s.handler.hang = false), 500);
    const stats = await consumer.run();
    expect(stats.released).toBeGreaterThanOrEqual(5);
    expect([...s.handler.written].sort()).toEqual(ids(5).sort());
    expect(s.sqs.view(s.queueUrl).bodies()).toEqual([]);
  });

  it("waits out an SQS throttle on receive", async () => {
    const s = setup();
    enqueueAll(s, ids(5));
    s.sqs.failNext(
      "ReceiveMessageCommand",
      new RequestThrottled({ message: "Rate exceeded", $metadata: { httpStatusCode: 400 } }),
    );
    const stats = await source(s).run();
    expect(stats).toMatchObject({ loaded: 5 });
    expect(stats.retries).toBeGreaterThanOrEqual(1);
  });
});

describe("holding and stopping", () => {
  it("keeps a slow batch invisible with the heartbeat: received once, never twice", async () => {
    const s = setup();
    enqueueAll(s, ids(3));
    // Extended at half the timeout, by three quarters at the latest: a second of margin here.
    s.handler.writeMs = 4_500;
    await source(s, { visibilityTimeoutSeconds: 4 }).run();
    expect(callsOf(s, "ChangeMessageVisibilityBatchCommand").length).toBeGreaterThanOrEqual(1);
    expect(s.handler.batches.flat().sort()).toEqual(ids(3).sort());
  });

  it("finishes what is in flight within the grace, then ends", async () => {
    const s = setup();
    enqueueAll(s, ids(10));
    s.handler.writeMs = 400;
    const consumer = source(s, { drain: false, waitTimeSeconds: 1, shutdownGraceMs: 5_000 });
    s.handler.onPrepare = () => consumer.stop();
    const stats = await consumer.run();
    expect(stats.loaded).toBe(10);
    expect(stats.released).toBe(0);
    expect(s.sqs.view(s.queueUrl).bodies()).toEqual([]);
  });

  it("abandons a write that outlives the grace and hands its messages back at once", async () => {
    const s = setup();
    enqueueAll(s, ids(10));
    s.handler.hang = true;
    const consumer = source(s, { drain: false, waitTimeSeconds: 0, shutdownGraceMs: 300 });
    s.handler.onPrepare = () => consumer.stop();
    const startedAt = Date.now();
    const stats = await consumer.run();
    expect(Date.now() - startedAt).toBeLessThan(3_000);
    expect(stats).toMatchObject({ loaded: 0, released: 10 });
    expect(s.sqs.view(s.queueUrl).visible()).toBe(10);
  });

  it("hands messages back only once every long poll it aborted has ended in SQS, a retried one too", async () => {
    const s = setup();
    s.sqs.pollsOutliveAborts = true;
    enqueueAll(s, ids(10));
    s.handler.hang = true;
    // One poller: it takes the ten, parks in a 2 s long poll that comes back empty, and then
    // its next receive fails five times (3.1-6.2 s of backoff, more than the second allowed
    // for a poll's lag) before the sixth attempt parks in a long poll, which outlives the stop.
    s.handler.onPrepare = () => {
      for (let i = 0; i < 5; i++) {
        s.sqs.failNext(
          "ReceiveMessageCommand",
          new RequestThrottled({ message: "Rate exceeded", $metadata: { httpStatusCode: 400 } }),
        );
      }
    };
    const consumer = source(s, {
      drain: false,
      concurrency: 1,
      waitTimeSeconds: 2,
      visibilityTimeoutSeconds: 60,
      shutdownGraceMs: 300,
    });
    const running = consumer.run();
    while (callsOf(s, "ReceiveMessageCommand").length < 8) await new Promise((r) => setTimeout(r, 20));
    consumer.stop();
    expect(await running).toMatchObject({ loaded: 0, released: 10 });
    // Visible again once that poll is over (its 2 s, a second's margin, slack), not taken by
    // it for a whole 60 s timeout.
    const deadline = Date.now() + 2_000 + 1_000 + 3_000;
    while (s.sqs.view(s.queueUrl).visible() < 10 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(s.sqs.view(s.queueUrl).visible()).toBe(10);
  }, 40_000);

  it("holds bodies within the byte bound: receives wait for room", async () => {
    const s = setup();
    const body = (id: string) => JSON.stringify({ id, pad: "x".repeat(10_000) });
    for (const id of ids(60)) s.sqs.enqueue(s.queueUrl, body(id));
    const bound = 50_000;
    let peak = 0;
    const consumer = source(s, { maxInFlightBytes: bound, batchSize: 10 });
    s.handler.onPrepare = () => (peak = Math.max(peak, consumer.inFlightBytes));
    const stats = await consumer.run();
    expect(stats.loaded).toBe(60);
    // One receive at a time may exceed it (up to ten bodies), never more.
    expect(peak).toBeGreaterThan(0);
    expect(peak).toBeLessThanOrEqual(bound + 10 * 10_100);
  });
});

describe("drain detection", () => {
  it("does not end while a message is delayed, and loads it when it arrives", async () => {
    const s = setup();
    enqueueAll(s, ids(2));
    s.sqs.enqueue(s.queueUrl, JSON.stringify({ id: "late" }), { delaySeconds: 1 });
    const stats = await source(s).run();
    expect(stats.loaded).toBe(3);
    expect(s.handler.written).toContain("late");
  });

  it("does not end while another consumer holds a message, and takes it if it comes back", async () => {
    const s = setup();
    enqueueAll(s, ids(1, "held"));
    // Another consumer's receive: invisible for a second, never deleted.
    await s.sqs.client.send(new ReceiveMessageCommand({ QueueUrl: s.queueUrl, VisibilityTimeout: 1 }));
    const stats = await source(s).run();
    expect(stats.loaded).toBe(1);
  });
});
