/**
 * The pipeline end to end, on the SQS emulator over HTTP and a real Postgres: the CLI in
 * --drain mode with each strategy, redelivery, duplicates in a batch, rows Postgres
 * refuses, and no DLQ configured.
 */
import { randomBytes } from "node:crypto";
import { ChangeMessageVisibilityCommand, ReceiveMessageCommand } from "@aws-sdk/client-sqs";
import { sql } from "slonik";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  createConsumer,
  decodeMessage,
  ensureSchema,
  loadStrategy,
  type LoginRecord,
  maskRecord,
  type MaskStrategy,
} from "../mod.ts";
import { PROCESSED_TABLE } from "../src/sink.ts";
import { writeBatch } from "../src/write-batch.ts";
import { EDGE_CASE_BODIES, INVALID_BODIES, sampleBodies, sendBodies } from "../scripts/produce.ts";
import {
  countRows,
  createFixture,
  type Fixture,
  queueDepth as sharedQueueDepth,
  rawPii,
  readRows,
  receiveAll,
  runTool,
  TEST_HMAC_KEY,
} from "./helpers.ts";

let f: Fixture;
beforeEach(async () => (f = await createFixture()));
afterEach(async () => await f.close());

const queueDepth = (queueUrl: string) => sharedQueueDepth(f.sqs, queueUrl);
/** Today's date in UTC, as create_date holds it. */
const utcDate = () => new Date().toISOString().slice(0, 10);
const activeTimers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;

describe.each(["hmac", "sha256"])("a mixed batch drained by the CLI with --strategy %s", (strategyName) => {
  it("loads every valid message once, masked right, and dead-letters every invalid one with its reason", async () => {
    const bodies = [...sampleBodies(150, 0, 11), ...EDGE_CASE_BODIES, ...INVALID_BODIES.map((i) => i.body)];
    const sentOn = utcDate();
    await sendBodies(f.sqs, f.queueUrl, bodies);

    const run = await runTool(["--drain", "--strategy", strategyName, "--log-level", "debug"], f.env);
    expect(run.stderr).not.toMatch(/^error/m);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^loaded=156 duplicates=0 dead_lettered=10 left_in_queue=0/);

    const strategy = await loadStrategy(strategyName, { env: { MASK_HMAC_KEY: TEST_HMAC_KEY } });
    const expected = await Promise.all([...sampleBodies(150, 0, 11), ...EDGE_CASE_BODIES].map(async (body) => {
      const m = JSON.parse(body);
      return {
        user_id: m.user_id,
        device_type: m.device_type,
        locale: m.locale ?? null,
        masked_ip: await strategy.mask(m.ip, "ip"),
        masked_device_id: await strategy.mask(m.device_id, "device_id"),
        app_version: Number(m.app_version.split(".")[0]) * 10000 + Number(m.app_version.split(".")[1]) * 100 +
          Number(m.app_version.split(".")[2]),
        // SQS stamped the messages after sentOn and before checkedOn: across UTC midnight, either day.
        create_date: expect.toSatisfy((date: string) => date === sentOn || date === utcDate()),
      };
    }));
    const rows = await readRows(f.pool);
    expect(rows).toHaveLength(expected.length);
    expect([...rows].sort((a, b) => a.user_id.localeCompare(b.user_id)))
      .toEqual(expected.sort((a, b) => a.user_id.localeCompare(b.user_id)));

    const dead = await receiveAll(f.sqs, f.dlqUrl);
    expect(dead.map((m) => m.Body === " " ? "" : m.Body).sort()).toEqual(INVALID_BODIES.map((i) => i.body).sort());
    for (const message of dead) {
      const reason = message.MessageAttributes?.invalid_reason?.StringValue ?? "";
      const want = INVALID_BODIES.find((i) => i.body === (message.Body === " " ? "" : message.Body))!.reason;
      expect(reason).toContain(want);
      expect(message.MessageAttributes?.source_message_id?.StringValue).toMatch(/\S/);
    }
    expect(await queueDepth(f.queueUrl)).toBe(0);

    const printed = run.stdout + run.stderr;
    for (const value of rawPii(bodies)) expect(printed).not.toContain(value);
  });
});

describe("exactly once in user_logins", () => {
  it("adds no second row when a committed message is delivered again", async () => {
    await sendBodies(f.sqs, f.queueUrl, sampleBodies(3, 0, 5));
    await ensureSchema(f.pool);
    const strategy = await loadStrategy("sha256", { env: {} });
    // A consumer that committed its rows and crashed before deleting the messages.
    const { Messages = [] } = await f.sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: f.queueUrl,
        MaxNumberOfMessages: 10,
        MessageSystemAttributeNames: ["SentTimestamp"],
      }),
    );
    expect(Messages).toHaveLength(3);
    const records = Messages.map((m) => (decodeMessage(m) as { record: LoginRecord }).record);
    await writeBatch(f.pool, strategy, await Promise.all(records.map((r) => maskRecord(strategy, r))));
    for (const m of Messages) {
      await f.sqs.send(
        new ChangeMessageVisibilityCommand({
          QueueUrl: f.queueUrl,
          ReceiptHandle: m.ReceiptHandle!,
          VisibilityTimeout: 0,
        }),
      );
    }

    const consumer = createConsumer({
      sqs: f.sqs,
      pool: f.pool,
      strategy,
      queueUrl: f.queueUrl,
      dlqUrl: f.dlqUrl,
      drain: true,
    });
    const timersBefore = activeTimers();
    const stats = await consumer.run();
    // Nothing of the run is left to hold the process open: a stop's abort timer for each
    // receive in flight once outlived the receive and delayed every CLI exit by a second.
    expect(activeTimers()).toBeLessThanOrEqual(timersBefore);
    expect(stats).toMatchObject({ received: 3, loaded: 0, duplicates: 3, deadLettered: 0 });
    expect(await countRows(f.pool)).toBe(3);
    expect(await queueDepth(f.queueUrl)).toBe(0);
  });

  it("writes one row for the same message twice in one batch", async () => {
    await ensureSchema(f.pool);
    const strategy = await loadStrategy("sha256", { env: {} });
    const message = {
      MessageId: "dup-1",
      ReceiptHandle: "r",
      Body: sampleBodies(1, 0, 9)[0],
      Attributes: { SentTimestamp: String(Date.now()) },
    };
    const record = (decodeMessage(message) as { record: LoginRecord }).record;
    const masked = await maskRecord(strategy, record);
    const outcome = await writeBatch(f.pool, strategy, [masked, masked]);
    expect(outcome).toMatchObject({ inserted: 1, duplicates: 1, rejected: [] });
    expect(outcome.committed).toHaveLength(2);
    expect(await countRows(f.pool)).toBe(1);
  });

  it("hands persist the values of new messages only, and calls back once their transaction has committed", async () => {
    await ensureSchema(f.pool);
    const sha256 = await loadStrategy("sha256", { env: {} });
    const persisted: string[][] = [];
    let commits = 0;
    let failNext = false;
    const strategy: MaskStrategy = {
      name: "recording",
      mask: sha256.mask,
      // deno-lint-ignore require-await -- persist's contract is a promise
      async persist(_tx, values) {
        persisted.push(values.map((v) => v.value));
        if (failNext) throw Object.assign(new Error("connection reset"), { code: "ECONNRESET" });
        return () => void commits++;
      },
    };
    const records = (bodies: string[], ids: string[]) =>
      Promise.all(bodies.map((body, i) =>
        maskRecord(
          strategy,
          (decodeMessage({
            MessageId: ids[i],
            ReceiptHandle: "r",
            Body: body,
            Attributes: { SentTimestamp: String(Date.now()) },
          }) as { record: LoginRecord }).record,
        )
      ));
    const [first, second] = sampleBodies(2, 0, 31) as [string, string];
    const ip = (body: string) => JSON.parse(body).ip as string;

    await writeBatch(f.pool, strategy, await records([first], ["p-1"]));
    // A redelivery of p-1 beside a new message: only the new one persists.
    await writeBatch(f.pool, strategy, await records([first, second], ["p-1", "p-2"]));
    // Only redeliveries: persist is not called at all.
    await writeBatch(f.pool, strategy, await records([first, second], ["p-1", "p-2"]));
    expect(persisted.map((values) => values[0])).toEqual([ip(first), ip(second)]);
    expect(commits).toBe(2);
    // A transaction that rolls back calls nothing back.
    failNext = true;
    await expect(writeBatch(f.pool, strategy, await records([first], ["p-3"]))).rejects.toThrow("connection reset");
    expect(commits).toBe(2);
  });
});

describe("one bad message never blocks the others", () => {
  it("commits the rest of a batch when Postgres refuses one row, and dead-letters that one with Postgres' reason", async () => {
    const good = sampleBodies(20, 0, 3);
    // A NUL character passes the schema but Postgres refuses it in text (22021).
    const poison = JSON.stringify({
      user_id: "poison",
      app_version: "1.0.0",
      device_type: "and\u0000roid",
      ip: "10.9.8.7",
      locale: null,
      device_id: "poison-device-77",
    });
    await sendBodies(f.sqs, f.queueUrl, [...good.slice(0, 10), poison, ...good.slice(10)]);
    const run = await runTool(["--drain", "--strategy", "sha256"], f.env);
    expect(run.code).toBe(0);
    expect(await countRows(f.pool)).toBe(20);
    const dead = await receiveAll(f.sqs, f.dlqUrl);
    expect(dead).toHaveLength(1);
    expect(dead[0]!.MessageAttributes?.invalid_reason?.StringValue).toMatch(
      /^rejected by Postgres: 22021 invalid byte sequence/,
    );
    expect(run.stdout + run.stderr).not.toMatch(/10\.9\.8\.7|poison-device-77/);
    expect(await queueDepth(f.queueUrl)).toBe(0);
  });

  it("leaves invalid messages in the queue when no DLQ is configured, counts them, and still drains", async () => {
    await sendBodies(f.sqs, f.queueUrl, [...sampleBodies(5, 0, 4), INVALID_BODIES[0]!.body, INVALID_BODIES[3]!.body]);
    const { DLQ_URL: _, ...env } = f.env;
    const run = await runTool(["--drain", "--strategy", "sha256"], env);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/loaded=5 .*dead_lettered=0 left_in_queue=2/);
    expect(run.stderr).toContain("invalid message left in the queue (no --dlq-url)");
    expect(await countRows(f.pool)).toBe(5);
    expect(await queueDepth(f.queueUrl)).toBe(2);
  });
});

describe("the user_logins contract", () => {
  it("creates the table exactly as specified and leaves an existing one untouched", async () => {
    await ensureSchema(f.pool);
    const columns = await f.pool.any(sql.unsafe`
      SELECT column_name, data_type, character_maximum_length FROM information_schema.columns
      WHERE table_name = 'user_logins' ORDER BY ordinal_position`);
    expect(columns).toEqual([
      { column_name: "user_id", data_type: "character varying", character_maximum_length: 128 },
      { column_name: "device_type", data_type: "character varying", character_maximum_length: 32 },
      { column_name: "masked_ip", data_type: "character varying", character_maximum_length: 256 },
      { column_name: "masked_device_id", data_type: "character varying", character_maximum_length: 256 },
      { column_name: "locale", data_type: "character varying", character_maximum_length: 32 },
      { column_name: "app_version", data_type: "integer", character_maximum_length: null },
      { column_name: "create_date", data_type: "date", character_maximum_length: null },
    ]);
    const before = await f.pool.oneFirst(sql.unsafe`SELECT xmin::text FROM pg_class WHERE relname = 'user_logins'`);
    await ensureSchema(f.pool);
    expect(await f.pool.oneFirst(sql.unsafe`SELECT xmin::text FROM pg_class WHERE relname = 'user_logins'`)).toBe(
      before,
    );
    expect(await f.pool.oneFirst(sql.unsafe`SELECT to_regclass(${PROCESSED_TABLE})::text`)).toBe(PROCESSED_TABLE);
  });

  it("stops with one line when the role may not insert", async () => {
    await ensureSchema(f.pool);
    // Roles are the cluster's, not the database's: a name of its own, dropped after, so
    // runs on one server (and their databases left behind) never meet.
    const reader = `reader_only_${randomBytes(3).toString("hex")}`;
    await f.pool.query(sql.unsafe`CREATE ROLE ${sql.identifier([reader])} LOGIN PASSWORD 'reader'`);
    try {
      await f.pool.query(sql.unsafe`GRANT SELECT ON user_logins TO ${sql.identifier([reader])}`);
      const url = new URL(f.databaseUrl);
      url.username = reader;
      url.password = "reader";
      const run = await runTool(["--drain", "--strategy", "sha256"], { ...f.env, DATABASE_URL: url.toString() });
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(
        new RegExp(
          `^error: Role ${reader} may not write user_logins or user_logins_sqs_messages: GRANT INSERT ON user_logins TO ${reader}`,
        ),
      );
      expect(run.stderr.trim().split("\n")).toHaveLength(1);
    } finally {
      await f.pool.query(sql.unsafe`DROP OWNED BY ${sql.identifier([reader])}`);
      await f.pool.query(sql.unsafe`DROP ROLE ${sql.identifier([reader])}`);
    }
  });
});
