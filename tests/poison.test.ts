/**
 * Poison input: rows Postgres refuses for reasons the validator did not foresee, bodies too
 * big to dead-letter ten at a time, and generated
 * malformed bodies (fast-check) — none may crash the tool, block the others, or put a raw
 * value in a log line or a DLQ reason. (The same message twice in one batch: see
 * "exactly once in user_logins" in pipeline.test.ts.)
 */
import fc from "fast-check";
import { sql } from "slonik";
import { afterEach, describe, expect, it } from "vitest";
import { ReceiveMessageCommand } from "@aws-sdk/client-sqs";
import { decodeMessage, ensureSchema } from "../mod.ts";
import { fitDeadLetterEntry } from "../src/dead-letter.ts";
import { readQueueDepth, SQS_MAX_BATCH_BYTES } from "../src/sqs.ts";
import { sampleBodies, sendBodies } from "../scripts/produce.ts";
import {
  countRows,
  createFixture,
  expectNoPii,
  type Fixture,
  type FixtureOptions,
  queueDepth,
  rawPii,
  receiveAll,
  type RunningTool,
  runTool,
  waitFor,
} from "./helpers.ts";

let f: Fixture | undefined;
afterEach(async () => {
  await f?.close();
  f = undefined;
});

/** Put into every generated string value, so a reason or log line that echoes one shows it. */
const MARK = "Zq9";

/** A valid login whose free-text values carry the mark. */
const validLogin = fc.record({
  user_id: fc.string({ minLength: 1, maxLength: 20 }).map((s) => `${MARK}${s}`.slice(0, 128)),
  app_version: fc.tuple(fc.nat(99), fc.nat(99), fc.nat(99)).map((p) => p.join(".")),
  device_type: fc.constantFrom("ios", "android", "web"),
  ip: fc.ipV4(),
  locale: fc.option(fc.constantFrom("US", "RU"), { nil: null }),
  device_id: fc.string({ minLength: 1, maxLength: 40 }).map((s) => `${MARK}${s}`),
});

const FIELDS = ["user_id", "app_version", "device_type", "ip", "locale", "device_id"] as const;

/** A login broken in one field: removed, or replaced by any JSON value (strings marked). */
const brokenLogin = fc.tuple(
  validLogin,
  fc.constantFrom(...FIELDS),
  fc.oneof(
    fc.constant(undefined),
    fc.jsonValue().map((v) => (typeof v === "string" ? `${MARK}${v}` : v)),
    fc.string({ maxLength: 300 }).map((s) => `${MARK}${s}.1.2`),
  ),
).map(([login, field, value]) => {
  const broken: Record<string, unknown> = { ...login };
  if (value === undefined) delete broken[field];
  else broken[field] = value;
  return JSON.stringify(broken);
});

/** Any body at all: random text, random JSON, or a login broken in one field. */
const anyBody = fc.oneof(fc.string({ maxLength: 200 }), fc.json({ maxDepth: 3 }), brokenLogin, brokenLogin);

function asMessage(body: string) {
  return { MessageId: "m-1", ReceiptHandle: "r-1", Body: body, Attributes: { SentTimestamp: "1700000000000" } };
}

describe("decodeMessage on generated bodies", () => {
  it("never throws, and gives every invalid body a reason that echoes no value", () => {
    fc.assert(
      fc.property(anyBody, (body) => {
        const decoded = decodeMessage(asMessage(body));
        if (decoded.ok) return;
        expect(decoded.reason).toMatch(/\S/);
        expect(decoded.reason.length).toBeLessThan(1000);
        expect(decoded.reason).not.toContain(MARK);
      }),
      { numRuns: 3_000 },
    );
  });
});

/** SQS refuses bodies with characters outside its set, and an empty body. */
// deno-lint-ignore no-control-regex -- the control characters SQS takes
const SQS_BODY = /^[\x09\x0A\x0D\x20-\uD7FF\uE000-\uFFFD]+$/u;

/** The reason of the one message the DLQ holds; fails unless it holds exactly one. */
async function onlyDeadLetterReason(): Promise<string> {
  const dead = await receiveAll(f!.sqs, f!.dlqUrl);
  expect(dead).toHaveLength(1);
  return dead[0]!.MessageAttributes?.invalid_reason?.StringValue ?? "";
}

/**
 * Ten good logins and one poison, drained with the strategy that writes each raw ip into
 * `strategy_side` (whose refusal the test has set up): the run, the good bodies, and the
 * reason the DLQ holds for the poison. Every good row is loaded, the poison is not.
 */
async function drainWithSideTablePoison(seed: number, poison: { user_id: string; ip: string; device_id: string }) {
  const good = sampleBodies(10, 0, seed);
  const body = JSON.stringify({ ...poison, app_version: "1.0.0", device_type: "ios", locale: null });
  await sendBodies(f!.sqs, f!.queueUrl, [...good, body]);
  const run = await runTool(
    ["--drain", "--strategy", "tests/fixtures/side-table-strategy.ts", "--log-level", "debug"],
    f!.env,
  );
  expect(run.code).toBe(0);
  expect(await countRows(f!.pool)).toBe(10);
  return { run, good, reason: await onlyDeadLetterReason() };
}

describe("the CLI on poison input", () => {
  it("dead-letters generated malformed bodies with a reason, loads the rest, and never crashes", async () => {
    f = await createFixture();
    const malformed = fc.sample(anyBody, { numRuns: 60, seed: 7 })
      .filter((b) => SQS_BODY.test(b) && b.trim() !== "" && !decodeMessage(asMessage(b)).ok)
      .slice(0, 40);
    const valid = sampleBodies(20, 0, 8);
    await sendBodies(f.sqs, f.queueUrl, [...valid, ...malformed]);
    const run = await runTool(["--drain", "--strategy", "sha256"], f.env);
    expect(run.code).toBe(0);
    expect(await countRows(f.pool)).toBe(20);
    const dead = await receiveAll(f.sqs, f.dlqUrl);
    expect(dead.map((m) => m.Body).sort()).toEqual([...malformed].sort());
    for (const m of dead) {
      const reason = m.MessageAttributes?.invalid_reason?.StringValue ?? "";
      expect(reason).toMatch(/\S/);
      expect(reason).not.toContain(MARK);
    }
    expect(run.stdout + run.stderr).not.toContain(MARK);
    expectNoPii(run.stdout + run.stderr, rawPii(valid));
    expect(await queueDepth(f.sqs, f.queueUrl)).toBe(0);
  });

  it("commits the others when a CHECK constraint refuses one row, and dead-letters it with Postgres' reason", async () => {
    f = await createFixture();
    await ensureSchema(f.pool);
    // A rule the validator knows nothing of: the test's own, on the test's own database.
    await f.pool.query(sql.unsafe`ALTER TABLE user_logins ADD CONSTRAINT no_kiosks CHECK (device_type <> 'kiosk')`);
    const good = sampleBodies(20, 0, 9);
    const poison = JSON.stringify({
      user_id: "poison-check",
      app_version: "1.0.0",
      device_type: "kiosk",
      ip: "172.16.254.99",
      locale: "US",
      device_id: "kiosk-serial-4411",
    });
    await sendBodies(f.sqs, f.queueUrl, [...good.slice(0, 5), poison, ...good.slice(5)]);
    const run = await runTool(["--drain", "--strategy", "sha256", "--batch-size", "50"], f.env);
    expect(run.code).toBe(0);
    expect(await countRows(f.pool)).toBe(20);
    const reason = await onlyDeadLetterReason();
    expect(reason).toMatch(/^rejected by Postgres: 23514 .*check constraint.*constraint no_kiosks/);
    expectNoPii(reason + run.stdout + run.stderr, ["172.16.254.99", "kiosk-serial-4411", ...rawPii(good)]);
    expect(await queueDepth(f.sqs, f.queueUrl)).toBe(0);
  });

  it("keeps the raw value Postgres quotes in an error DETAIL out of the DLQ reason and the logs", async () => {
    f = await createFixture();
    await ensureSchema(f.pool);
    await f.pool.query(
      sql.unsafe`CREATE TABLE strategy_side (v text CONSTRAINT no_test_net CHECK (v NOT LIKE '10.66.%'))`,
    );
    const { run, good, reason } = await drainWithSideTablePoison(13, {
      user_id: "poison-detail",
      ip: "10.66.123.45",
      device_id: "detail-device-5150",
    });
    expect(reason).toMatch(/^rejected by Postgres: 23514 .*constraint no_test_net/);
    expectNoPii(reason + run.stdout + run.stderr, ["10.66.123.45", "detail-device-5150", ...rawPii(good)]);
  });

  it("keeps a raw value Postgres quotes or names in its message line out of the DLQ reason and the logs", async () => {
    f = await createFixture();
    await ensureSchema(f.pool);
    // The message line itself carries the value: once as given (redacted by value) and once
    // quoted in another form that no value match would find (elided as quoted text).
    await f.pool.query(sql.unsafe`CREATE TABLE strategy_side (v text)`);
    await f.pool.query(sql.unsafe`
      CREATE FUNCTION refuse_test_net() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.v LIKE '10.77.%' THEN
          RAISE EXCEPTION 'address % refused, written "%"', NEW.v, replace(NEW.v, '.', '-') USING ERRCODE = '22023';
        END IF;
        RETURN NEW;
      END $$`);
    await f.pool.query(
      sql
        .unsafe`CREATE TRIGGER refuse_test_net BEFORE INSERT ON strategy_side FOR EACH ROW EXECUTE FUNCTION refuse_test_net()`,
    );
    const { run, good, reason } = await drainWithSideTablePoison(15, {
      user_id: "poison-message",
      ip: "10.77.123.45",
      device_id: "message-device-6160",
    });
    expect(reason).toBe('rejected by Postgres: 22023 address [redacted] refused, written "…"');
    expectNoPii(reason + run.stdout + run.stderr, [
      "10.77.123.45",
      "10-77-123-45",
      "message-device-6160",
      ...rawPii(good),
    ]);
  });

  it.each(["mask", "persist"])(
    "stops with one line naming no value when the strategy's %s throws with the value in its message",
    async (where) => {
      f = await createFixture();
      const bodies = sampleBodies(5, 0, 14);
      await sendBodies(f.sqs, f.queueUrl, bodies);
      const run = await runTool(["--drain", "--strategy", "tests/fixtures/throwing-strategy.ts"], {
        ...f.env,
        THROW_IN: where,
      });
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(new RegExp(`^error: Strategy throwing failed to ${where}`, "m"));
      expect(run.stderr).toContain("[redacted]");
      expectNoPii(run.stdout + run.stderr, rawPii(bodies));
      expect(await countRows(f.pool)).toBe(0);
    },
  );

  it("dead-letters bodies too big to send ten at a time", async () => {
    f = await createFixture();
    // Three 400 kB bodies: one SendMessageBatch of them would exceed SQS's 1 MiB per call.
    const big = ["a", "b", "c"].map((c) => c.repeat(400_000));
    await sendBodies(f.sqs, f.queueUrl, sampleBodies(5, 0, 12), 1);
    for (const body of big) await sendBodies(f.sqs, f.queueUrl, [body]);
    const run = await runTool(["--drain", "--strategy", "sha256"], f.env);
    expect(run.stderr).not.toMatch(/^error/m);
    expect(run.code).toBe(0);
    expect(await countRows(f.pool)).toBe(5);
    const dead = await receiveAll(f.sqs, f.dlqUrl);
    expect(dead.map((m) => m.Body!.length).sort()).toEqual([400_000, 400_000, 400_000]);
    expect(await queueDepth(f.sqs, f.queueUrl)).toBe(0);
  });
});

describe("the dead-letter entry", () => {
  const message = {
    MessageId: "0f8fad5b-d9cb-469f-a165-70867728950e",
    Body: "x",
    Attributes: { SentTimestamp: "1700000000000" },
  };
  const REASON = "user_id: required; app_version: required; device_type: required";
  // Each attribute's name, type and value but the reason's value: what a body shares the limit with.
  const fixedBytes = "invalid_reason".length + 6 + "source_message_id".length + 6 + 36 +
    "source_sent_timestamp".length + 6 + 13;

  it("carries the body, the reason, the source id and time, and counts its bytes as SQS does", () => {
    const entry = fitDeadLetterEntry({ ...message, Body: "not json" }, REASON, SQS_MAX_BATCH_BYTES)!;
    expect(entry.entry.MessageBody).toBe("not json");
    expect(entry.entry.MessageAttributes.invalid_reason.StringValue).toBe(REASON);
    expect(entry.entry.MessageAttributes.source_message_id.StringValue).toBe(message.MessageId);
    // body + for each attribute its name, type and value, in UTF-8 bytes
    expect(entry.bytes).toBe(
      8 + "invalid_reason".length + 6 + REASON.length + "source_message_id".length + 6 + 36 +
        "source_sent_timestamp".length + 6 + 13,
    );
  });

  it("shortens the reason so that a body near the limit still fits", () => {
    const body = "y".repeat(SQS_MAX_BATCH_BYTES - fixedBytes - 30);
    const entry = fitDeadLetterEntry({ ...message, Body: body }, REASON, SQS_MAX_BATCH_BYTES)!;
    expect(entry.bytes).toBeLessThanOrEqual(SQS_MAX_BATCH_BYTES);
    const reason = entry.entry.MessageAttributes.invalid_reason!.StringValue!;
    expect(reason.length).toBeLessThan(REASON.length);
    expect(REASON.startsWith(reason.replace(/…$/, ""))).toBe(true);
  });

  it("gives up when the body itself leaves no room, under SQS's limit or a smaller DLQ's", () => {
    expect(fitDeadLetterEntry({ ...message, Body: "z".repeat(SQS_MAX_BATCH_BYTES - 100) }, REASON, SQS_MAX_BATCH_BYTES))
      .toBeUndefined();
    expect(fitDeadLetterEntry({ ...message, Body: "z".repeat(300 * 1024) }, REASON, 256 * 1024)).toBeUndefined();
  });

  it("never splits a character, and keeps a reason to characters SQS accepts", () => {
    const reason = "rejected by Postgres: 22021 ungültige Bytefolge \u0001 ✓✓✓✓✓✓✓✓";
    for (let room = 1; room < 40; room++) {
      const body = "y".repeat(SQS_MAX_BATCH_BYTES - fixedBytes - room);
      const fitted = fitDeadLetterEntry({ ...message, Body: body }, reason + "\u0000\uFFFF", SQS_MAX_BATCH_BYTES);
      if (!fitted) continue;
      const value = fitted.entry.MessageAttributes.invalid_reason!.StringValue!;
      expect(value).toMatch(SQS_BODY);
      expect(Buffer.byteLength(value)).toBeLessThanOrEqual(room);
      expect(fitted.bytes).toBeLessThanOrEqual(SQS_MAX_BATCH_BYTES);
    }
  });
});

/** Run the CLI; fail (and kill it) if it has not exited within `ms`. */
async function exitsWithin(run: RunningTool, ms: number) {
  const timer = setTimeout(() => run.child.kill("SIGKILL"), ms);
  const result = await run;
  clearTimeout(timer);
  if (result.signal === "SIGKILL") {
    throw new Error(`still running after ${ms} ms; stderr tail: ${result.stderr.slice(-400)}`);
  }
  return result;
}

function summaryOf(stdout: string): Record<string, number> {
  const line = stdout.split("\n").find((l) => l.startsWith("loaded="));
  if (!line) throw new Error("no summary line");
  return Object.fromEntries(line.split(" ").map((kv) => kv.split("=")).map(([k, v]) => [k, Number.parseFloat(v!)]));
}

async function queueCounts(queueUrl: string): Promise<{ visible: number; invisible: number }> {
  const { visible, inFlight } = await readQueueDepth(f!.sqs, queueUrl);
  return { visible, invisible: inFlight };
}

describe("an invalid message the DLQ cannot take", { timeout: 60_000 }, () => {
  const SMALL_DLQ: FixtureOptions = { dlqMaximumMessageSize: 256 * 1024 };
  const tooBigForSmallDlq = "not json ".repeat(300 * 1024 / 9);

  it("is left in the queue when a DLQ's own limit refuses it; --drain still ends, and says so", async () => {
    f = await createFixture({ ...SMALL_DLQ, visibilityTimeout: 2 });
    const valid = sampleBodies(20, 0, 15);
    await sendBodies(f.sqs, f.queueUrl, [...valid.slice(0, 10), tooBigForSmallDlq, ...valid.slice(10)]);
    const run = await exitsWithin(runTool(["--drain", "--strategy", "sha256"], f.env), 30_000);
    expect(run.code).toBe(0);
    expect(summaryOf(run.stdout)).toMatchObject({ loaded: 20, dead_lettered: 0, left_in_queue: 1 });
    expect(run.stderr).toContain("too big for the DLQ");
    // No redrive policy on the queue: said once, with what it means.
    expect(run.stderr.match(/has no RedrivePolicy/g)).toHaveLength(1);
    // Handed back at the end of the run, not left invisible.
    expect(await queueCounts(f.queueUrl)).toEqual({ visible: 1, invisible: 0 });
    expect(await receiveAll(f.sqs, f.dlqUrl)).toHaveLength(0);
    expectNoPii(run.stdout + run.stderr, rawPii(valid));
  });

  it("near SQS's 1 MiB limit: dead-letters one with a shortened reason, leaves one that cannot fit to SQS's redrive", async () => {
    f = await createFixture({ visibilityTimeout: 2, maxReceiveCount: 1 });
    const valid = sampleBodies(50, 0, 16);
    // A JSON object missing every field: a long reason, shortened to fit beside the body.
    const fitsShortened = JSON.stringify({ pad: "q".repeat(SQS_MAX_BATCH_BYTES - 160) });
    const cannotFit = "r".repeat(SQS_MAX_BATCH_BYTES - 100);
    await sendBodies(f.sqs, f.queueUrl, valid.slice(0, 25), 1);
    await sendBodies(f.sqs, f.queueUrl, [fitsShortened]);
    await sendBodies(f.sqs, f.queueUrl, [cannotFit]);
    await sendBodies(f.sqs, f.queueUrl, valid.slice(25), 1);
    const run = await exitsWithin(runTool(["--drain", "--strategy", "sha256"], f.env), 30_000);
    expect(run.stderr).not.toMatch(/^error/m);
    expect(run.code).toBe(0);
    expect(summaryOf(run.stdout)).toMatchObject({ loaded: 50, dead_lettered: 1, left_in_queue: 1 });
    expect(run.stderr).not.toContain("has no RedrivePolicy");
    expect(await countRows(f.pool)).toBe(50);
    const [dead] = await receiveAll(f.sqs, f.dlqUrl);
    expect(dead!.Body).toBe(fitsShortened);
    expect(dead!.MessageAttributes?.invalid_reason?.StringValue).toMatch(/^user_id: required.*…$/);
    // The one left behind: its next receive passes maxReceiveCount, and SQS moves it itself.
    await waitFor(
      "SQS's redrive to move it",
      async () => {
        await f!.sqs.send(
          new ReceiveMessageCommand({ QueueUrl: f!.queueUrl, WaitTimeSeconds: 1, VisibilityTimeout: 1 }),
        );
        return (await queueDepth(f!.sqs, f!.queueUrl)) === 0;
      },
      20_000,
      200,
    );
    const redriven = await receiveAll(f.sqs, f.dlqUrl);
    expect(redriven.map((m) => m.Body!.length)).toEqual([cannotFit.length]);
  });

  it("is not heartbeated: SQS's redrive takes it while the tool runs", async () => {
    f = await createFixture({ ...SMALL_DLQ, visibilityTimeout: 2, maxReceiveCount: 2 });
    await sendBodies(f.sqs, f.queueUrl, [tooBigForSmallDlq]);
    const run = runTool(["--strategy", "sha256"], f.env);
    try {
      await waitFor(
        "SQS's redrive to move it to the DLQ",
        async () => (await queueCounts(f!.dlqUrl)).visible === 1,
        30_000,
        200,
      );
    } finally {
      run.child.kill("SIGTERM");
    }
    const result = await exitsWithin(run, 15_000);
    expect(result.code).toBe(0);
    expect(summaryOf(result.stdout)).toMatchObject({ dead_lettered: 0, left_in_queue: 1 });
  });

  it("is handed back by a stop like any other message", async () => {
    f = await createFixture({ ...SMALL_DLQ, visibilityTimeout: 30 });
    await sendBodies(f.sqs, f.queueUrl, [tooBigForSmallDlq]);
    // A 2 s grace: long polls then wait 2 s, and what a stop hands back is visible once they end.
    const run = runTool(["--strategy", "sha256"], { ...f.env, STOP_GRACE_SECONDS: "2" });
    try {
      await waitFor(
        "the tool to take it",
        () => run.stderrSoFar().includes("too big for the DLQ") || run.stderrSoFar().includes("DLQ refused"),
        20_000,
        100,
      );
    } finally {
      run.child.kill("SIGTERM");
    }
    const result = await exitsWithin(run, 15_000);
    expect(result.code).toBe(0);
    // Another consumer can take it once the stop's aborted long polls are over (2 s), not after
    // the queue's 30 s visibility timeout.
    const stoppedAt = Date.now();
    const again = await waitFor(
      "another consumer to receive it",
      async () => {
        const { Messages = [] } = await f!.sqs.send(
          new ReceiveMessageCommand({ QueueUrl: f!.queueUrl, WaitTimeSeconds: 1, VisibilityTimeout: 0 }),
        );
        return Messages[0];
      },
      10_000,
      100,
    );
    expect(again.Body).toBe(tooBigForSmallDlq);
    expect(Date.now() - stoppedAt).toBeLessThan(10_000);
  });
});
