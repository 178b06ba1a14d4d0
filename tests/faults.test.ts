/**
 * The promises under the faults that break real consumers: SIGKILL mid-stream, Postgres and
 * SQS outages (a TCP proxy cut in front of the shared services), a batch slower than the
 * visibility timeout, SIGTERM mid-batch, and three consumers on one queue. Every test also
 * checks that no raw ip or device_id reached stdout or stderr.
 *
 * Each test prints what it observed (retries, recovery time, rows, DLQ counts) on the test's
 * console, for the closing note of the issue.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { ReceiveMessageCommand } from "@aws-sdk/client-sqs";
import { sql } from "slonik";
import { afterEach, describe, expect, it } from "vitest";
import { createDatabasePool, ensureSchema } from "../mod.ts";
import { DEFAULT_STOP_GRACE_SECONDS } from "../src/consumer/options.ts";
import { PROCESSED_TABLE } from "../src/sink.ts";
import { describeStartupError } from "../src/cli.ts";
import { classifyDatabaseError } from "../src/postgres-errors.ts";
import { readQueueDepth } from "../src/sqs.ts";
import { INVALID_BODIES, sampleBodies, seededRandom, sendBodies } from "../scripts/produce.ts";
import {
  countRows,
  createFixture,
  expectNoPii,
  type Fixture,
  lockUserLogins,
  openTransactions,
  queueDepth,
  rawPii,
  receiveAll,
  ROOT,
  type RunningTool,
  type RunResult,
  runTool,
  waitFor,
  waitingForLock,
} from "./helpers.ts";
import { startTcpProxy, type TcpProxy } from "./proxy.ts";

const SLOW_STRATEGY = "tests/fixtures/slow-strategy.ts";
/** A stop grace short enough for a test (the default is 20 s); set through the environment. */
const SHORT_GRACE_S = 5;
/** What the README promises: a stop exits within the grace plus this many seconds. */
const STOP_MARGIN_S = 5;
const INVALID = new Set(INVALID_BODIES.map((i) => i.body));

let f: Fixture | undefined;
let proxy: TcpProxy | undefined;
const children: RunningTool[] = [];

afterEach(async () => {
  for (const run of children.splice(0)) {
    if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill("SIGKILL");
  }
  await proxy?.close();
  proxy = undefined;
  await f?.close();
  f = undefined;
});

/** A fresh fixture with the tables made, so a test can count rows before the tool starts. */
async function fixture(options: { visibilityTimeout?: number } = {}): Promise<Fixture> {
  const fx = await createFixture(options);
  await ensureSchema(fx.pool);
  return fx;
}

function start(args: readonly string[], env: Record<string, string | undefined>): RunningTool {
  const run = runTool(args, env);
  children.push(run);
  return run;
}

/** Send SIGTERM and wait for the exit: the result, and how long the stop took. */
async function stopWithSigterm(run: RunningTool): Promise<{ result: RunResult; stopMs: number }> {
  const signalledAt = Date.now();
  run.child.kill("SIGTERM");
  const result = await run;
  return { result, stopMs: Date.now() - signalledAt };
}

/** The numbers of the summary line the CLI prints on exit. */
function summaryOf(run: RunResult): Record<string, number> {
  const line = run.stdout.split("\n").find((l) => l.startsWith("loaded="));
  if (!line) throw new Error(`no summary line; exit ${run.code}; stderr tail: ${run.stderr.slice(-600)}`);
  return Object.fromEntries(line.split(" ").map((kv) => kv.split("=")).map(([k, v]) => [k, Number.parseFloat(v!)]));
}

/** What the valid and invalid parts of a set of bodies should become. */
function expectations(bodies: readonly string[]) {
  return { valid: bodies.filter((b) => !INVALID.has(b)).length, invalid: bodies.filter((b) => INVALID.has(b)).length };
}

/** The table holds each valid message exactly once, the DLQ each invalid one, the queue nothing. */
async function expectExactlyOnce(fx: Fixture, bodies: readonly string[]): Promise<{ rows: number; dlq: number }> {
  const { valid, invalid } = expectations(bodies);
  expect(await countRows(fx.pool)).toBe(valid);
  // Sample user_ids are unique, so a doubled row shows as a repeated user_id.
  expect(await fx.pool.oneFirst(sql.unsafe`SELECT count(DISTINCT user_id)::int FROM user_logins`)).toBe(valid);
  expect(await fx.pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM ${sql.identifier([PROCESSED_TABLE])}`)).toBe(
    valid,
  );
  const dead = await receiveAll(fx.sqs, fx.dlqUrl);
  const sources = new Set(dead.map((m) => m.MessageAttributes?.source_message_id?.StringValue));
  expect(sources.size).toBe(invalid);
  for (const m of dead) expect(m.MessageAttributes?.invalid_reason?.StringValue).toMatch(/\S/);
  expect(await queueDepth(fx.sqs, fx.queueUrl)).toBe(0);
  return { rows: valid, dlq: dead.length };
}

async function visibleMessages(fx: Fixture): Promise<number> {
  return (await readQueueDepth(fx.sqs, fx.queueUrl)).visible;
}

/** The longest a released message may stay hidden: the tool holds a release back until the
 * long polls its stop aborted have ended in SQS (20 s at most), plus a second. */
const RELEASE_VISIBLE_WITHIN_MS = 25_000;

/**
 * Wait until `count` messages are visible again, no more and none in flight. With the queue's
 * visibility timeout far longer than this wait, only the tool's release can have done it.
 */
async function expectReleased(fx: Fixture, count: number): Promise<void> {
  const depth = await waitFor(
    "the released messages to be visible",
    async () => {
      const now = await readQueueDepth(fx.sqs, fx.queueUrl);
      return now.visible >= count ? now : undefined;
    },
    RELEASE_VISIBLE_WITHIN_MS,
    100,
  );
  expect(depth).toMatchObject({ visible: count, inFlight: 0 });
}

function printedBy(runs: readonly RunResult[]): string {
  return runs.map((r) => r.stdout + r.stderr).join("\n");
}

/**
 * The seed of this file's random choices: printed, and taken from FAULTS_SEED when set, so a
 * failing run can be replayed.
 */
const SEED = Number(process.env.FAULTS_SEED ?? Math.floor(Math.random() * 2 ** 31));

describe("crash", { timeout: 240_000 }, () => {
  it("loses and doubles nothing when SIGKILLed mid-stream four times, then drained", async () => {
    f = await fixture({ visibilityTimeout: 2 });
    const fx = f;
    const random = seededRandom(SEED);
    const bodies = sampleBodies(400, 0.1, 101);
    await sendBodies(fx.sqs, fx.queueUrl, bodies);
    const { valid } = expectations(bodies);
    const runs: RunResult[] = [];
    const kills: Array<{ rowsAtStart: number; rowsAtKill: number }> = [];
    // Slow writes (a sleep inside each batch's transaction) so that kills land mid-stream:
    // inside a transaction, between commit and delete, or while sending to the DLQ.
    const env = { ...fx.env, SLOW_PERSIST_MS: "40" };
    for (let kill = 1; kill <= 4; kill++) {
      const rowsAtStart = await countRows(fx.pool);
      const run = start(["--strategy", SLOW_STRATEGY, "--batch-size", "10", "--concurrency", "2"], env);
      // Counted from this process's own start: a target the earlier ones already reached
      // would kill this one during start-up, before it wrote anything.
      const target = rowsAtStart + 20 + Math.floor(random() * 40);
      await waitFor(
        `${target} rows before kill ${kill} (seed ${SEED})`,
        async () => (await countRows(fx.pool)) >= target,
        30_000,
        10,
      );
      await new Promise((resolve) => setTimeout(resolve, random() * 60));
      run.child.kill("SIGKILL");
      const result = await run;
      expect(result.signal).toBe("SIGKILL");
      kills.push({ rowsAtStart, rowsAtKill: await countRows(fx.pool) });
      runs.push(result);
    }
    // Each kill landed while this process was committing rows, with work left to do.
    for (const { rowsAtStart, rowsAtKill } of kills) {
      expect(rowsAtKill, `seed ${SEED}: kills at ${JSON.stringify(kills)}`).toBeGreaterThan(rowsAtStart);
      expect(rowsAtKill, `seed ${SEED}: kills at ${JSON.stringify(kills)}`).toBeLessThan(valid);
    }
    const drain = await start(["--drain", "--strategy", SLOW_STRATEGY], fx.env);
    runs.push(drain);
    expect(drain.code).toBe(0);
    const outcome = await expectExactlyOnce(fx, bodies);
    expectNoPii(printedBy(runs), rawPii(bodies));
    console.log(
      `crash (FAULTS_SEED=${SEED}): killed at rows ${kills.map((k) => k.rowsAtKill).join(", ")}; drain ${
        JSON.stringify(summaryOf(drain))
      }; final`,
      outcome,
    );
  });
});

/**
 * Cut a service's proxy once the tool has loaded some rows, keep it down, restore it, and
 * check that the tool waited (did not exit), lost and doubled nothing, and resumed.
 */
async function throughOutage(options: {
  seed: number;
  downMs: number;
  /** The proxy's target, and the tool's environment pointed through it. */
  target(fx: Fixture): string;
  env(fx: Fixture, p: TcpProxy): Record<string, string>;
  retryLine: RegExp;
}) {
  f = await fixture({ visibilityTimeout: 3 });
  const fx = f;
  proxy = await startTcpProxy(options.target(fx));
  const p = proxy;
  const bodies = sampleBodies(200, 0.1, options.seed);
  await sendBodies(fx.sqs, fx.queueUrl, bodies);
  const run = start(["--drain", "--strategy", SLOW_STRATEGY, "--batch-size", "10", "--concurrency", "2"], {
    ...fx.env,
    SLOW_PERSIST_MS: "50",
    ...options.env(fx, p),
  });
  await waitFor("the first rows", async () => (await countRows(fx.pool)) >= 40, 30_000, 20);
  await p.cut();
  const rowsAtCut = await countRows(fx.pool);
  await new Promise((resolve) => setTimeout(resolve, options.downMs));
  expect(run.child.exitCode).toBeNull(); // still waiting, not exited
  const rowsWhenRestored = await countRows(fx.pool);
  const restoredAt = Date.now();
  await p.restore();
  const { valid } = expectations(bodies);
  await waitFor("all rows after the outage", async () => (await countRows(fx.pool)) === valid, 40_000);
  const recoveryMs = Date.now() - restoredAt;
  const result = await run;
  expect(result.stderr).not.toMatch(/"level":"error"/);
  expect(result.code).toBe(0);
  expect(result.stderr).toMatch(options.retryLine);
  const outcome = await expectExactlyOnce(fx, bodies);
  expectNoPii(printedBy([result]), rawPii(bodies));
  const summary = summaryOf(result);
  expect(summary.retries).toBeGreaterThan(0);
  return { rowsAtCut, rowsWhenRestored, recoveryMs, summary, outcome };
}

// An outage test runs ~20 s: start-up, the outage, recovery within the backoff ceiling.
describe("outages", { timeout: 90_000 }, () => {
  it("waits out a 10 s Postgres outage mid-run and resumes by itself", async () => {
    const seen = await throughOutage({
      seed: 202,
      downMs: 10_000,
      target: (fx) => fx.databaseUrl.replace(/^postgres(ql)?:/, "tcp:"),
      env: (fx, p) => ({ DATABASE_URL: p.via(fx.databaseUrl) }),
      retryLine: /Postgres unavailable, retrying the batch/,
    });
    // Nothing can commit while Postgres is unreachable.
    expect(seen.rowsWhenRestored).toBe(seen.rowsAtCut);
    console.log("postgres outage:", seen);
  });

  it("waits out an 8 s SQS outage mid-run and resumes by itself", async () => {
    const seen = await throughOutage({
      seed: 303,
      downMs: 8_000,
      target: (fx) => fx.endpoint,
      env: (fx, p) => ({
        AWS_ENDPOINT_URL: p.via(fx.endpoint),
        QUEUE_URL: p.via(fx.queueUrl),
        DLQ_URL: p.via(fx.dlqUrl),
      }),
      retryLine: /SQS \w[\w ]* failed, retrying/,
    });
    console.log("sqs outage:", seen);
  });
});

describe("slow batch", { timeout: 90_000 }, () => {
  it("keeps a batch slower than the visibility timeout invisible to other consumers", async () => {
    f = await fixture({ visibilityTimeout: 2 });
    const fx = f;
    const bodies = sampleBodies(30, 0, 404);
    await sendBodies(fx.sqs, fx.queueUrl, bodies);
    // One transaction that sleeps 6 s: three visibility timeouts.
    const run = start(["--drain", "--strategy", SLOW_STRATEGY, "--batch-size", "100", "--concurrency", "1"], {
      ...fx.env,
      SLOW_PERSIST_MS: "6000",
    });
    await waitFor(
      "the batch's transaction",
      async () => isConsuming(run) && (await openTransactions(fx.pool)) > 0,
      30_000,
      20,
    );
    // Only once the tool holds every message may nobody else get one.
    await waitFor("the tool to hold all 30", async () => (await visibleMessages(fx)) === 0, 10_000, 20);
    const stolen: string[] = [];
    const until = Date.now() + 5_000;
    while (Date.now() < until && run.child.exitCode === null) {
      const { Messages = [] } = await fx.sqs.send(
        new ReceiveMessageCommand({
          QueueUrl: fx.queueUrl,
          MaxNumberOfMessages: 10,
          WaitTimeSeconds: 1,
          VisibilityTimeout: 1,
        }),
      );
      stolen.push(...Messages.map((m) => m.MessageId!));
    }
    expect(stolen).toEqual([]);
    const result = await run;
    expect(result.code).toBe(0);
    const summary = summaryOf(result);
    // Received once each: no lapse handed any message back, to us or anyone.
    expect(summary).toMatchObject({ loaded: 30, duplicates: 0 });
    expect(await countRows(fx.pool)).toBe(30);
    expect(await queueDepth(fx.sqs, fx.queueUrl)).toBe(0);
    expectNoPii(printedBy([result]), rawPii(bodies));
    console.log("slow batch: 6 s transaction, visibility timeout 2 s; second receiver got", stolen.length, summary);
  });
});

describe("clean stop", { timeout: 90_000 }, () => {
  it("on SIGTERM mid-batch commits what it can within the grace, releases the rest, and exits 0", async () => {
    // A visibility timeout far past the test: what comes back, came back by the release.
    f = await fixture({ visibilityTimeout: 300 });
    const fx = f;
    const bodies = sampleBodies(80, 0, 505);
    await sendBodies(fx.sqs, fx.queueUrl, bodies);
    // Batches of 10, two written at a time, 3 s each: at the signal two are mid-transaction
    // and commit within the 6 s grace however busy the machine; the rest cannot start, and
    // are released. Not --drain: pollers park in 20 s long polls, which the stop must not
    // wait for.
    const grace = SHORT_GRACE_S + 1;
    const run = start(["--strategy", SLOW_STRATEGY, "--batch-size", "10"], {
      ...fx.env,
      SLOW_PERSIST_MS: "3000",
      STOP_GRACE_SECONDS: String(grace),
    });
    // After "consuming": the start-up's own schema transaction must not count as a batch.
    await waitFor(
      "a batch's transaction",
      async () => isConsuming(run) && (await openTransactions(fx.pool)) > 0,
      60_000,
      20,
    );
    const rowsAtSignal = await countRows(fx.pool);
    const { result, stopMs } = await stopWithSigterm(run);
    expect(result.code).toBe(0);
    expect(stopMs).toBeLessThan((grace + STOP_MARGIN_S) * 1000);
    const summary = summaryOf(result);
    expect(await countRows(fx.pool)).toBe(summary.loaded);
    expect(summary.loaded).toBeGreaterThan(rowsAtSignal);
    // Something was received and not finished: it is released, and the summary says so.
    expect(summary.released).toBeGreaterThan(0);
    expect(summary.loaded! + summary.released!).toBe(80);
    // Committed ones deleted; the released ones visible to another consumer once the polls
    // the stop aborted are over (the tool holds them back that long), long before 300 s.
    await expectReleased(fx, summary.released!);
    const taken = await receiveAll(fx.sqs, fx.queueUrl);
    const loadedUsers = new Set(
      await fx.pool.anyFirst(sql.unsafe`SELECT user_id FROM user_logins`) as readonly string[],
    );
    expect(taken).toHaveLength(summary.released!);
    for (const m of taken) expect(loadedUsers.has(JSON.parse(m.Body!).user_id)).toBe(false);
    expectNoPii(printedBy([result]), rawPii(bodies));
    console.log(`clean stop: rows at SIGTERM ${rowsAtSignal}, exit 0 after ${stopMs} ms;`, summary);
  });

  it("on SIGTERM while idle does not wait for the parked long poll", async () => {
    f = await fixture();
    const run = start(["--strategy", "sha256"], f.env);
    await waitFor("the consumer to start", () => isConsuming(run), 15_000, 50);
    // Give the receives time to park in their 20 s long polls.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const { result, stopMs } = await stopWithSigterm(run);
    expect(result.code).toBe(0);
    expect(stopMs).toBeLessThan(5_000); // the long poll is 20 s
    console.log(`idle stop: exit 0 after ${stopMs} ms`);
  });
});

describe("clean stop while Postgres is down", { timeout: 90_000 }, () => {
  it("gives up on what cannot commit after the grace period, releases it, and exits 0", async () => {
    f = await fixture({ visibilityTimeout: 300 });
    const fx = f;
    proxy = await startTcpProxy(fx.databaseUrl.replace(/^postgres(ql)?:/, "tcp:"));
    const p = proxy;
    const bodies = sampleBodies(30, 0, 707);
    const run = start(["--strategy", "sha256", "--batch-size", "10"], {
      ...fx.env,
      DATABASE_URL: p.via(fx.databaseUrl),
      STOP_GRACE_SECONDS: String(SHORT_GRACE_S),
    });
    await waitFor("the consumer to start", () => isConsuming(run), 15_000, 50);
    await p.cut();
    await sendBodies(fx.sqs, fx.queueUrl, bodies);
    await waitFor("a retry", () => run.stderrSoFar().includes("Postgres unavailable, retrying the batch"), 15_000, 50);
    const { result, stopMs } = await stopWithSigterm(run);
    expect(result.code).toBe(0);
    // The grace, then release and exit within the margin the README promises; and the
    // default grace with that margin fits inside the stop grace compose gives the container.
    expect(stopMs).toBeLessThan((SHORT_GRACE_S + STOP_MARGIN_S) * 1000);
    expect((DEFAULT_STOP_GRACE_SECONDS + STOP_MARGIN_S) * 1000).toBeLessThan(await composeStopGraceMs());
    expect(summaryOf(result)).toMatchObject({ loaded: 0, released: 30 });
    expect(result.stderr).toContain("releasing unfinished messages to the queue");
    // Released, not left invisible for the queue's 300 s timeout.
    await expectReleased(fx, 30);
    expectNoPii(printedBy([result]), rawPii(bodies));
    console.log(
      `stop while Postgres is down: grace ${SHORT_GRACE_S} s, exit 0 after ${stopMs} ms, 30 messages released`,
    );
  });
});

/** The consumer's `stop_grace_period` in docker-compose.yml: compose kills it after that. */
async function composeStopGraceMs(): Promise<number> {
  const compose = await readFile(join(ROOT, "docker-compose.yml"), "utf8");
  const seconds = /stop_grace_period:\s*(\d+)s/.exec(compose)?.[1];
  if (!seconds) throw new Error("docker-compose.yml sets no stop_grace_period in seconds");
  return Number(seconds) * 1000;
}

function isConsuming(run: RunningTool): boolean {
  return run.stderrSoFar().includes('"msg":"consuming"');
}

describe("many consumers", { timeout: 150_000 }, () => {
  it("three processes on one queue load each valid message once", async () => {
    f = await fixture();
    const fx = f;
    const runs = [0, 1, 2].map(() =>
      start(["--strategy", SLOW_STRATEGY, "--batch-size", "10"], { ...fx.env, SLOW_PERSIST_MS: "20" })
    );
    // All three must be consuming before the messages arrive, or the first could take them all.
    await waitFor("three consumers", () => runs.every((r) => isConsuming(r)), 30_000, 50);
    const bodies = sampleBodies(600, 0.1, 606);
    await sendBodies(fx.sqs, fx.queueUrl, bodies);
    const { valid, invalid } = expectations(bodies);
    await waitFor(
      "every row",
      async () => (await countRows(fx.pool)) === valid && (await queueDepth(fx.sqs, fx.queueUrl)) === 0,
      60_000,
    );
    for (const run of runs) run.child.kill("SIGTERM");
    const results = await Promise.all(runs);
    for (const result of results) expect(result.code).toBe(0);
    const summaries = results.map(summaryOf);
    expect(summaries.reduce((sum, s) => sum + s.loaded!, 0)).toBe(valid);
    // Shared, not one process doing all the work while the others idle.
    for (const summary of summaries) {
      expect(summary.loaded, `loaded ${summaries.map((s) => s.loaded).join(" + ")}`).toBeGreaterThan(0);
    }
    expect(summaries.reduce((sum, s) => sum + s.dead_lettered!, 0)).toBeGreaterThanOrEqual(invalid);
    const outcome = await expectExactlyOnce(fx, bodies);
    expectNoPii(printedBy(results), rawPii(bodies));
    console.log(`three consumers: loaded ${summaries.map((s) => s.loaded).join(" + ")} = ${valid};`, outcome);
  });
});

/**
 * Stall a service's proxy for 8 s once the tool is loading: open connections go silent and
 * stay so, new ones are served again after the stall. The tool must give up on the silent
 * ones by itself, resume within 30 s of the stall's end, lose and double nothing, and still
 * stop on SIGTERM.
 */
async function throughStall(options: {
  seed: number;
  target(fx: Fixture): string;
  env(fx: Fixture, p: TcpProxy): Record<string, string>;
}) {
  f = await fixture({ visibilityTimeout: 10 });
  const fx = f;
  proxy = await startTcpProxy(options.target(fx));
  const p = proxy;
  const bodies = sampleBodies(400, 0.1, options.seed);
  await sendBodies(fx.sqs, fx.queueUrl, bodies);
  // Not --drain: receives park in 20 s long polls, the case a receive deadline must cover.
  const run = start(["--strategy", SLOW_STRATEGY, "--batch-size", "10", "--concurrency", "4"], {
    ...fx.env,
    SLOW_PERSIST_MS: "30",
    STOP_GRACE_SECONDS: String(SHORT_GRACE_S),
    ...options.env(fx, p),
  });
  await waitFor("the first rows", async () => (await countRows(fx.pool)) >= 60, 30_000, 20);
  const stallMs = 8_000;
  p.stall(stallMs);
  const rowsAtStall = await countRows(fx.pool);
  await new Promise((resolve) => setTimeout(resolve, stallMs));
  const rowsWhenStallEnded = await countRows(fx.pool);
  const stallEndedAt = Date.now();
  const { valid } = expectations(bodies);
  await waitFor(
    "every row, and the queue empty, within 30 s of the stall's end",
    async () => (await countRows(fx.pool)) === valid && (await queueDepth(fx.sqs, fx.queueUrl)) === 0,
    30_000,
    200,
  )
    .catch((error) => {
      throw new Error(
        `${(error as Error).message}; rows ${rowsWhenStallEnded} at the stall's end; stderr tail: ${
          run.stderrSoFar().slice(-3000)
        }`,
      );
    });
  const recoveryMs = Date.now() - stallEndedAt;
  expect(run.child.exitCode).toBeNull();
  const { result, stopMs } = await stopWithSigterm(run);
  expect(result.code).toBe(0);
  expect(stopMs).toBeLessThan((SHORT_GRACE_S + STOP_MARGIN_S) * 1000);
  expect(result.stderr).not.toMatch(/"level":"error"/);
  const outcome = await expectExactlyOnce(fx, bodies);
  expectNoPii(printedBy([result]), rawPii(bodies));
  const summary = summaryOf(result);
  expect(summary.retries).toBeGreaterThan(0);
  return { rowsAtStall, rowsWhenStallEnded, recoveryMs, stopMs, summary, outcome, stderr: result.stderr };
}

// A stall test runs ~30-40 s: start-up, rows, the 8 s stall, the deadlines, recovery.
describe("half-open connections", { timeout: 120_000 }, () => {
  it("takes a connection attempt that Postgres never answers for a fault to wait out, not a reason to stop", async () => {
    f = await fixture();
    proxy = await startTcpProxy(f.databaseUrl.replace(/^postgres(ql)?:/, "tcp:"));
    // Connections opened during the stall stay silent: the client's connect timeout fires.
    proxy.stall(2_000);
    const error = await (async () => {
      const pool = await createDatabasePool(proxy!.via(f!.databaseUrl));
      try {
        await pool.query(sql.unsafe`SELECT 1`);
      } finally {
        await pool.end();
      }
    })().then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    expect(classifyDatabaseError(error)).toBe("transient");
    expect(describeStartupError(error, proxy.via(f.databaseUrl))).toMatch(/^Cannot reach Postgres at /);
  });

  it("gives up on SQS connections that stop answering, long polls included, and resumes by itself", async () => {
    const seen = await throughStall({
      seed: 808,
      target: (fx) => fx.endpoint,
      env: (fx, p) => ({
        AWS_ENDPOINT_URL: p.via(fx.endpoint),
        QUEUE_URL: p.via(fx.queueUrl),
        DLQ_URL: p.via(fx.dlqUrl),
      }),
    });
    expect(seen.stderr).toMatch(/no answer within \d+ s/);
    const { stderr: _, ...shown } = seen;
    console.log("sqs stall:", shown);
  });

  it("gives up on Postgres connections that stop answering, rolls their transactions back, and resumes by itself", async () => {
    const seen = await throughStall({
      seed: 909,
      target: (fx) => fx.databaseUrl.replace(/^postgres(ql)?:/, "tcp:"),
      env: (fx, p) => ({ DATABASE_URL: p.via(fx.databaseUrl) }),
    });
    expect(seen.stderr).toMatch(/Postgres unavailable, retrying the batch/);
    const { stderr: _, ...shown } = seen;
    console.log("postgres stall:", shown);
  });

  it("releases a batch it cannot commit by its deadline, so another consumer loads it", async () => {
    f = await fixture({ visibilityTimeout: 300 });
    const fx = f;
    proxy = await startTcpProxy(fx.databaseUrl.replace(/^postgres(ql)?:/, "tcp:"));
    const p = proxy;
    const bodies = sampleBodies(100, 0, 1010);
    const stuck = start(["--strategy", "sha256", "--batch-size", "10"], {
      ...fx.env,
      DATABASE_URL: p.via(fx.databaseUrl),
      BATCH_DEADLINE_SECONDS: "5",
      STOP_GRACE_SECONDS: String(SHORT_GRACE_S),
    });
    await waitFor("the consumer to start", () => isConsuming(stuck), 15_000, 50);
    // Its Postgres goes silent for longer than the test; then the messages arrive.
    p.stall(600_000);
    await sendBodies(fx.sqs, fx.queueUrl, bodies);
    await waitFor("the stuck consumer to hold messages", async () => (await visibleMessages(fx)) < 100, 15_000, 50);
    // A second consumer, with a working path to Postgres, gets what the first released.
    const healthy = start(["--strategy", "sha256", "--batch-size", "10"], fx.env);
    await waitFor(
      "every row, loaded by the healthy consumer",
      async () => (await countRows(fx.pool)) === 100,
      40_000,
      200,
    );
    expect(stuck.child.exitCode).toBeNull();
    const [stopped, other] = await Promise.all([stopWithSigterm(stuck), stopWithSigterm(healthy)]);
    for (const { result, stopMs } of [stopped, other]) {
      expect(result.code).toBe(0);
      expect(stopMs).toBeLessThan((SHORT_GRACE_S + STOP_MARGIN_S) * 1000);
    }
    expect(summaryOf(stopped.result)).toMatchObject({ loaded: 0 });
    expect(stopped.result.stderr).toContain("batch not committed by its deadline");
    expect(summaryOf(other.result).loaded).toBe(100);
    expect(await queueDepth(fx.sqs, fx.queueUrl)).toBe(0);
    expectNoPii(printedBy([stopped.result, other.result]), rawPii(bodies));
    console.log("batch deadline:", { stuck: summaryOf(stopped.result), healthy: summaryOf(other.result) });
  });
});

describe("stop while a transaction is blocked", { timeout: 90_000 }, () => {
  it("abandons the transaction, releases its messages and exits 0 within the grace", async () => {
    f = await fixture({ visibilityTimeout: 300 });
    const fx = f;
    const bodies = sampleBodies(200, 0, 1111);
    await sendBodies(fx.sqs, fx.queueUrl, bodies);
    // Another session holds the table: every batch's INSERT waits for the lock.
    const lock = await lockUserLogins(fx);
    try {
      const run = start(["--strategy", "sha256", "--batch-size", "50"], {
        ...fx.env,
        STOP_GRACE_SECONDS: String(SHORT_GRACE_S),
      });
      await waitFor(
        "a batch waiting for the lock",
        async () => isConsuming(run) && (await waitingForLock(fx)) > 0,
        30_000,
        50,
      );
      await waitFor("the consumer to hold all 200", async () => (await visibleMessages(fx)) === 0, 15_000, 50);
      const { result, stopMs } = await stopWithSigterm(run);
      expect(result.code).toBe(0);
      expect(stopMs).toBeLessThan((SHORT_GRACE_S + STOP_MARGIN_S) * 1000);
      // Ctrl-C shows what the stop waits for: how many, and until when.
      const stopping = result.stderr.split("\n").find((l) => l.includes('"msg":"stopping'));
      expect(stopping && JSON.parse(stopping)).toMatchObject({
        in_flight: 200,
        wait_until: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      });
      expect(summaryOf(result)).toMatchObject({ loaded: 0, released: 200 });
      // Released, not left invisible for the queue's 300 s timeout.
      await expectReleased(fx, 200);
      expectNoPii(printedBy([result]), rawPii(bodies));
      console.log(`stop while blocked: grace ${SHORT_GRACE_S} s, exit 0 after ${stopMs} ms;`, summaryOf(result));
    } finally {
      await lock.release();
    }
  });
});

describe("memory bound", { timeout: 90_000 }, () => {
  it("holds no more large bodies in flight than its byte bound allows while nothing commits", async () => {
    f = await fixture({ visibilityTimeout: 60 });
    const fx = f;
    const BODY_BYTES = 256 * 1024;
    const BOUND_MB = 4;
    // Valid logins padded with an unknown field (ignored, but received and held).
    const bodies = sampleBodies(60, 0, 1212).map((b) =>
      JSON.stringify({ ...JSON.parse(b), padding: "p".repeat(BODY_BYTES) })
    );
    // Three at a time: SQS takes at most 1 MiB per call.
    for (let i = 0; i < bodies.length; i += 3) await sendBodies(fx.sqs, fx.queueUrl, bodies.slice(i, i + 3));
    const lock = await lockUserLogins(fx);
    let run: RunningTool | undefined;
    let mostHeld = 0;
    try {
      run = start(["--drain", "--strategy", "sha256", "--batch-size", "10"], {
        ...fx.env,
        MAX_IN_FLIGHT_MB: String(BOUND_MB),
      });
      const tool = run;
      await waitFor(
        "a batch waiting for the lock",
        async () => isConsuming(tool) && (await waitingForLock(fx)) > 0,
        30_000,
        50,
      );
      // Watch what the tool holds while nothing can commit: it must stop receiving at the bound.
      for (let i = 0; i < 20; i++) {
        mostHeld = Math.max(mostHeld, await invisibleMessages(fx));
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    } finally {
      await lock.release();
    }
    const result = await run!;
    expect(result.code).toBe(0);
    expect(mostHeld).toBeGreaterThan(0);
    expect(mostHeld).toBeLessThanOrEqual(Math.floor((BOUND_MB * 1024 * 1024) / BODY_BYTES));
    expect(await countRows(fx.pool)).toBe(60);
    expect(await queueDepth(fx.sqs, fx.queueUrl)).toBe(0);
    console.log(
      `memory bound: ${BOUND_MB} MB of ${BODY_BYTES / 1024} KiB bodies, at most ${mostHeld} held while locked;`,
      summaryOf(result),
    );
  });
});

async function invisibleMessages(fx: Fixture): Promise<number> {
  return (await readQueueDepth(fx.sqs, fx.queueUrl)).inFlight;
}
