/**
 * `sqs-login-masker check` against the emulator and Postgres: a ready set-up exits 0, and
 * each problem is one line with its fix. It receives no message and changes nothing.
 */
import { randomBytes } from "node:crypto";
import { CreateQueueCommand } from "@aws-sdk/client-sqs";
import { sql } from "slonik";
import { describe, expect, it } from "vitest";
import { ensureMaskRecord, ensureSchema, loadStrategy } from "../mod.ts";
import { sampleBodies, sendBodies } from "../scripts/produce.ts";
import { reachableQueueUrl } from "../scripts/embedded.ts";
import { describeMissingWriteGrants, PROCESSED_TABLE } from "../src/sink.ts";
import { readQueueDepth } from "../src/sqs.ts";
import { SHA256_CAUTION } from "../strategies/sha256.ts";
import { createFixture, type Fixture, runTool, TEST_HMAC_KEY } from "./helpers.ts";

const check = (env: Record<string, string | undefined>, args: readonly string[] = []) =>
  runTool(["check", ...args], env);

/** stderr's lines, for a count and exact matches. */
const lines = (text: string) => text.split("\n").filter(Boolean);

async function createQueue(f: Fixture, name: string, attributes?: Record<string, string>): Promise<string> {
  const { QueueUrl } = await f.sqs.send(new CreateQueueCommand({ QueueName: name, Attributes: attributes }));
  return reachableQueueUrl(QueueUrl!, f.endpoint);
}

/** A login role of its own in the fixture's database, dropped by the returned function. */
async function loginRole(f: Fixture): Promise<{ role: string; url: string; drop(): Promise<void> }> {
  // Roles are the cluster's: a name of its own, so that runs on one server never meet.
  const role = `check_${randomBytes(3).toString("hex")}`;
  await f.pool.query(sql.unsafe`CREATE ROLE ${sql.identifier([role])} LOGIN PASSWORD 'check'`);
  const url = new URL(f.databaseUrl);
  url.username = role;
  url.password = "check";
  return {
    role,
    url: url.toString(),
    async drop() {
      await f.pool.query(sql.unsafe`DROP OWNED BY ${sql.identifier([role])}`);
      await f.pool.query(sql.unsafe`DROP ROLE ${sql.identifier([role])}`);
    },
  };
}

describe("check", { timeout: 60_000 }, () => {
  it("a ready set-up: exit 0, what holds on stdout, and nothing received or created", async () => {
    const f = await createFixture({ maxReceiveCount: 5 });
    try {
      await sendBodies(f.sqs, f.queueUrl, sampleBodies(7, 0, 3));
      const run = await check(f.env);
      expect(run.stderr).toBe("");
      expect(run.code).toBe(0);
      expect(lines(run.stdout)).toEqual([
        "ok: --strategy hmac: created, its keys accepted",
        `ok: --queue-url ${f.queueUrl}: reachable, VisibilityTimeout 30 s, RedrivePolicy after 5 receives`,
        `ok: --dlq-url ${f.dlqUrl}: reachable`,
        expect.stringMatching(
          /^ok: --database-url postgres:\/\/.*: role \w+ may create user_logins, and user_logins_sqs_messages$/,
        ),
        "ok: user_logins has no recorded mask yet: the first run records hmac and its key's fingerprint",
      ]);
      // Every message still visible, none in flight: nothing was received.
      expect(await readQueueDepth(f.sqs, f.queueUrl)).toEqual({ visible: 7, inFlight: 0, delayed: 0 });
      // Nothing was created either.
      expect(await f.pool.oneFirst(sql.unsafe`SELECT to_regclass('user_logins')::text`)).toBeNull();

      // The table the tool creates is the contract's, to the letter.
      await ensureSchema(f.pool);
      const again = await check(f.env);
      expect(again.stderr).toBe("");
      expect(again.stdout).toMatch(
        /^ok: --database-url \S+: role \w+ may write user_logins, as the contract has it, and user_logins_sqs_messages$/m,
      );
    } finally {
      await f.close();
    }
  });

  it("a queue that does not exist: one line, exit 1", async () => {
    const f = await createFixture({ maxReceiveCount: 5 });
    try {
      const missing = new URL("/000000000000/no-such-queue", f.endpoint).toString();
      const run = await check({ ...f.env, QUEUE_URL: missing });
      expect(lines(run.stderr)).toEqual([
        `error: Cannot use --queue-url ${missing}: queue does not exist (check the URL and region)`,
      ]);
      expect(run.code).toBe(1);
    } finally {
      await f.close();
    }
  });

  it("the queue's attributes: a warning for no RedrivePolicy, an error for VisibilityTimeout 0", async () => {
    const f = await createFixture({ visibilityTimeout: 0 });
    try {
      const run = await check(f.env);
      expect(lines(run.stderr)).toEqual([
        expect.stringMatching(
          /^error: --queue-url \S+: VisibilityTimeout is 0, .*: give the queue a VisibilityTimeout of 30 s or more$/,
        ),
        expect.stringMatching(
          /^warning: --queue-url \S+: the queue has no RedrivePolicy: .*so that SQS moves such messages to a DLQ itself$/,
        ),
      ]);
      expect(run.code).toBe(1);
    } finally {
      await f.close();
    }
  });

  it("the DLQ: of another kind than the queue (FIFO), another than the redrive target, smaller than the queue", async () => {
    const f = await createFixture({ maxReceiveCount: 5 });
    try {
      const id = randomBytes(3).toString("hex");
      const fifoDlq = await createQueue(f, `check-${id}-dlq.fifo`, { FifoQueue: "true" });
      const fifo = await check({ ...f.env, DLQ_URL: fifoDlq });
      expect(lines(fifo.stderr)).toContainEqual(
        `error: --dlq-url ${fifoDlq}: the queue is standard and the DLQ FIFO: SQS's redrive policy cannot move a standard queue's messages there; give the queue a standard DLQ`,
      );
      expect(fifo.code).toBe(1);

      const small = await createQueue(f, `check-${id}-small-dlq`, { MaximumMessageSize: "262144" });
      const other = await check({ ...f.env, DLQ_URL: small });
      expect(lines(other.stderr)).toEqual([
        expect.stringMatching(
          new RegExp(
            `^warning: --queue-url \\S+: its RedrivePolicy moves messages to arn:\\S+, not to the DLQ of --dlq-url \\(arn:\\S+check-${id}-small-dlq\\): .*point both at one DLQ$`,
          ),
        ),
        `warning: --dlq-url ${small}: its MaximumMessageSize (262144 bytes) is below the queue's (1048576): an invalid message too big for the DLQ is left in the queue for its RedrivePolicy; raise the DLQ's MaximumMessageSize to 1048576`,
      ]);
      expect(other.code).toBe(0);
    } finally {
      await f.close();
    }
  });

  it("Postgres: a role that may not write, and a table that is not the contract's, each one line", async () => {
    const f = await createFixture({ maxReceiveCount: 5 });
    const reader = await loginRole(f);
    try {
      await ensureSchema(f.pool);
      await f.pool.query(sql.unsafe`GRANT SELECT ON user_logins TO ${sql.identifier([reader.role])}`);
      const denied = await check({ ...f.env, DATABASE_URL: reader.url });
      expect(lines(denied.stderr)).toEqual([
        `error: ${describeMissingWriteGrants(reader.role)}`,
        `error: user_logins has no recorded mask and role ${reader.role} may not record it: run the tool once as the owner of user_logins (it records the mask), or GRANT INSERT ON user_logins_mask TO ${reader.role}`,
      ]);
      expect(denied.code).toBe(1);

      await f.pool.query(sql.unsafe`ALTER TABLE user_logins ALTER COLUMN masked_ip TYPE varchar(64)`);
      await f.pool.query(sql.unsafe`ALTER TABLE user_logins ADD COLUMN tenant text NOT NULL`);
      const changed = await check(f.env);
      expect(lines(changed.stderr)).toEqual([
        "error: Column user_logins.masked_ip is character varying(64), and the contract says character varying(256): restore it (ALTER TABLE user_logins ALTER COLUMN masked_ip TYPE character varying(256))",
        "error: Column user_logins.tenant is NOT NULL without a default, so every insert would be refused: give it a default, or drop NOT NULL",
      ]);
      expect(changed.code).toBe(1);
      expect(await f.pool.oneFirst(sql.unsafe`SELECT to_regclass(${PROCESSED_TABLE})::text`)).toBe(PROCESSED_TABLE);
    } finally {
      await reader.drop();
      await f.close();
    }
  });

  it("Postgres: no table and no right to create it, and a server not there, each one line", async () => {
    const f = await createFixture({ maxReceiveCount: 5 });
    const stranger = await loginRole(f);
    try {
      await f.pool.query(sql.unsafe`REVOKE CREATE ON SCHEMA public FROM PUBLIC`);
      const denied = await check({ ...f.env, DATABASE_URL: stranger.url });
      expect(lines(denied.stderr)).toEqual([
        `error: Role ${stranger.role} may not create user_logins in schema public: GRANT CREATE ON SCHEMA public TO ${stranger.role}, or run the tool once as the tables' owner`,
      ]);
      expect(denied.code).toBe(1);

      const nowhere = await check({ ...f.env, DATABASE_URL: "postgres://nobody@127.0.0.1:9/none" });
      expect(lines(nowhere.stderr)).toEqual([
        expect.stringMatching(
          /^error: Cannot reach Postgres at postgres:\/\/nobody@127\.0\.0\.1:9\/none: .*ECONNREFUSED/,
        ),
      ]);
      expect(nowhere.code).toBe(1);
    } finally {
      await stranger.drop();
      await f.close();
    }
  });

  it("the recorded mask: the same one is ready; another key, or another strategy, is one line naming both, exit 2", async () => {
    const f = await createFixture({ maxReceiveCount: 5 });
    try {
      await ensureSchema(f.pool);
      const hmac = await loadStrategy("hmac", { env: { MASK_HMAC_KEY: TEST_HMAC_KEY } });
      const { record } = await ensureMaskRecord(f.pool, hmac);
      const same = await check(f.env);
      expect(same.stderr).toBe("");
      expect(same.code).toBe(0);
      expect(same.stdout).toContain(
        `ok: ${record.table} is masked by hmac (fingerprint ${hmac.fingerprint}), as this configuration\n`,
      );

      const other = await check({ ...f.env, MASK_HMAC_KEY: "o".repeat(32) + "-another-test-key" });
      expect(lines(other.stderr)).toEqual([
        expect.stringMatching(
          new RegExp(
            `^error: ${
              record.table.replace(".", "\\.")
            } is masked by hmac \\(fingerprint ${hmac.fingerprint}\\); this run's mask is hmac \\(fingerprint [0-9a-f]{32}\\): rows masked two ways never join\\. `,
          ),
        ),
      ]);
      expect(other.code).toBe(2);
      const sha = await check(f.env, ["--strategy", "sha256"]);
      expect(sha.stderr).toMatch(
        /^error: \S+ is masked by hmac \(fingerprint [0-9a-f]{32}\); this run's mask is sha256 \(no key\)/m,
      );
      expect(sha.code).toBe(2);
    } finally {
      await f.close();
    }
  });

  it("flags and keys first: a short key is one line, exit 2, before any service is reached", async () => {
    const run = await check({
      QUEUE_URL: "http://127.0.0.1:9/0/q",
      DATABASE_URL: "postgres://x@127.0.0.1:9/x",
      MASK_HMAC_KEY: "short",
    });
    expect(run.stderr).toBe(
      "error: MASK_HMAC_KEY is 5 bytes; it must be at least 32 (e.g. MASK_HMAC_KEY=$(openssl rand -hex 32))\n",
    );
    expect(run.code).toBe(2);
    expect(run.stdout).toBe("");
  });

  it("sha256: a warning that it is reversible, and still ready", async () => {
    const f = await createFixture({ maxReceiveCount: 5 });
    try {
      const run = await check(f.env, ["--strategy", "sha256"]);
      expect(lines(run.stderr)).toEqual([`warning: --strategy sha256: ${SHA256_CAUTION}`]);
      expect(run.code).toBe(0);
    } finally {
      await f.close();
    }
  });
});
