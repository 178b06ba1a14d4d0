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
import { decodeMessage, ensureSchema } from "../mod.ts";
import { sampleBodies, sendBodies } from "../scripts/produce.ts";
import { countRows, createFixture, expectNoPii, type Fixture, queueDepth, rawPii, receiveAll, runTool } from "./helpers.ts";

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
const brokenLogin = fc.tuple(validLogin, fc.constantFrom(...FIELDS), fc.oneof(
  fc.constant(undefined),
  fc.jsonValue().map((v) => (typeof v === "string" ? `${MARK}${v}` : v)),
  fc.string({ maxLength: 300 }).map((s) => `${MARK}${s}.1.2`),
)).map(([login, field, value]) => {
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
    fc.assert(fc.property(anyBody, (body) => {
      const decoded = decodeMessage(asMessage(body));
      if (decoded.ok) return;
      expect(decoded.reason).toMatch(/\S/);
      expect(decoded.reason.length).toBeLessThan(1000);
      expect(decoded.reason).not.toContain(MARK);
    }), { numRuns: 3_000 });
  });
});

/** SQS refuses bodies with characters outside its set, and an empty body. */
const SQS_BODY = /^[\x09\x0A\x0D\x20-\uD7FF\uE000-\uFFFD]+$/u;

/** The reason of the one message the DLQ holds; fails unless it holds exactly one. */
async function onlyDeadLetterReason(): Promise<string> {
  const dead = await receiveAll(f!.sqs, f!.dlqUrl);
  expect(dead).toHaveLength(1);
  return dead[0]!.MessageAttributes?.invalid_reason?.StringValue ?? "";
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
    const poison = JSON.stringify({ user_id: "poison-check", app_version: "1.0.0", device_type: "kiosk", ip: "172.16.254.99", locale: "US", device_id: "kiosk-serial-4411" });
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
    await f.pool.query(sql.unsafe`CREATE TABLE strategy_side (v text CONSTRAINT no_test_net CHECK (v NOT LIKE '10.66.%'))`);
    const good = sampleBodies(10, 0, 13);
    const poison = JSON.stringify({ user_id: "poison-detail", app_version: "1.0.0", device_type: "ios", ip: "10.66.123.45", locale: null, device_id: "detail-device-5150" });
    await sendBodies(f.sqs, f.queueUrl, [...good, poison]);
    const run = await runTool(["--drain", "--strategy", "tests/fixtures/side-table-strategy.ts", "--log-level", "debug"], f.env);
    expect(run.code).toBe(0);
    expect(await countRows(f.pool)).toBe(10);
    const reason = await onlyDeadLetterReason();
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
    await f.pool.query(sql.unsafe`CREATE TRIGGER refuse_test_net BEFORE INSERT ON strategy_side FOR EACH ROW EXECUTE FUNCTION refuse_test_net()`);
    const good = sampleBodies(10, 0, 15);
    const poison = JSON.stringify({ user_id: "poison-message", app_version: "1.0.0", device_type: "ios", ip: "10.77.123.45", locale: null, device_id: "message-device-6160" });
    await sendBodies(f.sqs, f.queueUrl, [...good, poison]);
    const run = await runTool(["--drain", "--strategy", "tests/fixtures/side-table-strategy.ts", "--log-level", "debug"], f.env);
    expect(run.code).toBe(0);
    expect(await countRows(f.pool)).toBe(10);
    const reason = await onlyDeadLetterReason();
    expect(reason).toBe('rejected by Postgres: 22023 address [redacted] refused, written "…"');
    expectNoPii(reason + run.stdout + run.stderr, ["10.77.123.45", "10-77-123-45", "message-device-6160", ...rawPii(good)]);
  });

  it.each(["mask", "persist"])("stops with one line naming no value when the strategy's %s throws with the value in its message", async (where) => {
    f = await createFixture();
    const bodies = sampleBodies(5, 0, 14);
    await sendBodies(f.sqs, f.queueUrl, bodies);
    const run = await runTool(["--drain", "--strategy", "tests/fixtures/throwing-strategy.ts"], { ...f.env, THROW_IN: where });
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(new RegExp(`^error: Strategy throwing failed to ${where}`, "m"));
    expect(run.stderr).toContain("[redacted]");
    expectNoPii(run.stdout + run.stderr, rawPii(bodies));
    expect(await countRows(f.pool)).toBe(0);
  });

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
