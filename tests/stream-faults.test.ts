/**
 * Conditions of the whole stream, not of one row: a table that drifted from the contract
 * (a table fault stops the tool and dead-letters no valid message), and faults that pass
 * (a cancelled statement, a lock held past the statement deadline, SQS throttling), which
 * are waited out. Real Postgres and fauxqs; the tool as a child process.
 */
import { SendMessageBatchCommand } from "@aws-sdk/client-sqs";
import { sql } from "slonik";
import { afterEach, describe, expect, it } from "vitest";
import { ensureSchema } from "../mod.ts";
import { PROCESSED_TABLE } from "../src/sink.ts";
import { INVALID_BODIES, sampleBodies, sendBodies } from "../scripts/produce.ts";
import {
  countRows,
  createFixture,
  expectNoPii,
  type Fixture,
  lockUserLogins,
  rawPii,
  receiveAll,
  type RunningTool,
  type RunResult,
  runTool,
  waitFor,
  waitingForLock,
} from "./helpers.ts";
import { startTcpProxy, type TcpProxy } from "./proxy.ts";
import {
  OVER_LIMIT,
  REQUEST_THROTTLED,
  type SqsFaultProxy,
  startSqsFaultProxy,
  THROTTLING,
} from "./sqs-fault-proxy.ts";

let f: Fixture | undefined;
let sqsProxy: SqsFaultProxy | undefined;
let pgProxy: TcpProxy | undefined;
const children: RunningTool[] = [];

afterEach(async () => {
  for (const run of children.splice(0)) {
    if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill("SIGKILL");
  }
  await sqsProxy?.close();
  sqsProxy = undefined;
  await pgProxy?.close();
  pgProxy = undefined;
  await f?.close();
  f = undefined;
});

function start(args: readonly string[], env: Record<string, string | undefined>): RunningTool {
  const run = runTool(args, env);
  children.push(run);
  return run;
}

async function fixture(): Promise<Fixture> {
  // A short visibility timeout: what a stopped run held comes back soon.
  const fx = await createFixture({ visibilityTimeout: 5 });
  await ensureSchema(fx.pool);
  return fx;
}

/** Each valid message's row exactly once, and its id once in the ledger. */
async function expectLoadedOnce(fx: Fixture, valid: number): Promise<void> {
  expect(await countRows(fx.pool)).toBe(valid);
  expect(await fx.pool.oneFirst(sql.unsafe`SELECT count(DISTINCT user_id)::int FROM user_logins`)).toBe(valid);
  expect(await fx.pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM ${sql.identifier([PROCESSED_TABLE])}`)).toBe(
    valid,
  );
}

/** The run's result, or a failure if it has not ended within `ms`. */
async function exitWithin(run: RunningTool, ms: number): Promise<RunResult> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`still running after ${ms} ms; stderr tail: ${run.stderrSoFar().slice(-1500)}`)),
      ms,
    );
  });
  try {
    return await Promise.race([run, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The lines of a run's log at level error (the CLI repeats the stop's reason as its last line). */
function errorLines(stderr: string): string[] {
  return stderr.split("\n").filter((line) => /"level":"(error|fatal)"/.test(line));
}

describe("table faults", () => {
  const drifts = [
    {
      name: "a column added NOT NULL without a default (23502)",
      // Rows exist, so NOT NULL comes with a default that is then dropped: new rows have none.
      drift: [
        sql.unsafe`ALTER TABLE user_logins ADD COLUMN extra text NOT NULL DEFAULT ''`,
        sql.unsafe`ALTER TABLE user_logins ALTER COLUMN extra DROP DEFAULT`,
      ],
      fix: sql.unsafe`ALTER TABLE user_logins DROP COLUMN extra`,
      names: [/user_logins/, /extra/, /not-null/],
    },
    {
      name: "device_type narrowed to varchar(4) (22001)",
      drift: [sql.unsafe`ALTER TABLE user_logins ALTER COLUMN device_type TYPE varchar(4) USING left(device_type, 4)`],
      fix: sql.unsafe`ALTER TABLE user_logins ALTER COLUMN device_type TYPE varchar(32)`,
      names: [/user_logins/, /device_type/, /character varying\(4\)/],
    },
  ];
  for (const { name, drift, fix, names } of drifts) {
    it(`stops on ${name}, dead-letters no valid message, and loads everything once fixed`, async () => {
      f = await fixture();
      const fx = f;
      const before = sampleBodies(60, 0, 31);
      const after = sampleBodies(140, 0, 32).filter((b) => !before.includes(b));
      await sendBodies(fx.sqs, fx.queueUrl, before);
      const run = start(["--batch-size", "20"], fx.env);
      await waitFor("the first rows", async () => (await countRows(fx.pool)) === before.length);
      for (const statement of drift) await fx.pool.query(statement);
      await sendBodies(fx.sqs, fx.queueUrl, after);
      const result = await exitWithin(run, 30_000);
      expect(result.code).toBe(1);
      expect(await receiveAll(fx.sqs, fx.dlqUrl)).toHaveLength(0);
      const stopLines = errorLines(result.stderr);
      expect(stopLines, stopLines.join("\n")).toHaveLength(1);
      for (const pattern of names) expect(stopLines[0]).toMatch(pattern);
      expectNoPii(result.stdout + result.stderr, rawPii([...before, ...after]));
      expect(await countRows(fx.pool)).toBe(before.length);

      await fx.pool.query(fix);
      // The messages refused were never deleted: a drain waits for any still hidden, and loads them.
      const again = await runTool(["--drain", "--batch-size", "20"], fx.env);
      expect(again.code, again.stderr.slice(-800)).toBe(0);
      await expectLoadedOnce(fx, before.length + after.length);
      expect(await receiveAll(fx.sqs, fx.dlqUrl)).toHaveLength(0);
    }, 120_000);
  }

  it("names the table and column of a dropped column when it stops (42703)", async () => {
    f = await fixture();
    const fx = f;
    const bodies = sampleBodies(40, 0, 33);
    await sendBodies(fx.sqs, fx.queueUrl, bodies.slice(0, 20));
    const run = start(["--batch-size", "10"], fx.env);
    await waitFor("the first rows", async () => (await countRows(fx.pool)) === 20);
    await fx.pool.query(sql.unsafe`ALTER TABLE user_logins DROP COLUMN masked_ip`);
    await sendBodies(fx.sqs, fx.queueUrl, bodies.slice(20));
    const result = await exitWithin(run, 30_000);
    expect(result.code).toBe(1);
    const stop = result.stderr.split("\n").find((l) => l.startsWith("error:")) ?? "";
    expect(stop).toMatch(/masked_ip/);
    expect(stop).toMatch(/user_logins/);
    expectNoPii(result.stdout + result.stderr, rawPii(bodies));
  });

  it("still dead-letters a row that is the row's fault alongside a clean batch", async () => {
    f = await fixture();
    const fx = f;
    const good = sampleBodies(30, 0, 41);
    const invalid = INVALID_BODIES.slice(0, 3).map((i) => i.body);
    await sendBodies(fx.sqs, fx.queueUrl, [...good, ...invalid]);
    const run = await runTool(["--drain", "--batch-size", "20"], fx.env);
    expect(run.code).toBe(0);
    await expectLoadedOnce(fx, good.length);
    expect(await receiveAll(fx.sqs, fx.dlqUrl)).toHaveLength(invalid.length);
  });
});

/** The tool's own sessions of the test's database that wait for a lock: its INSERTs. */
async function insertsWaitingForLock(fx: Fixture): Promise<number[]> {
  return await fx.pool.anyFirst(sql.unsafe`
    SELECT pid FROM pg_stat_activity
    WHERE datname = current_database() AND wait_event_type = 'Lock' AND query ILIKE '%INSERT INTO%'`) as number[];
}

/** Log lines at warn or above that say what the tool waits for. */
function waitingLines(stderr: string): string[] {
  return stderr.split("\n").filter((line) => /"waiting_for":"/.test(line));
}

describe("passing faults wait", { timeout: 90_000 }, () => {
  it("waits out pg_cancel_backend on its running INSERT (57014, user request) and loads every row once", async () => {
    f = await fixture();
    const fx = f;
    const bodies = sampleBodies(100, 0, 51);
    const lock = await lockUserLogins(fx);
    try {
      await sendBodies(fx.sqs, fx.queueUrl, bodies);
      const run = start(["--drain", "--batch-size", "25"], fx.env);
      // The INSERTs wait for the lock: each is then cancelled as an operator would.
      const pids = await waitFor("an INSERT waiting for the lock", async () => {
        const waiting = await insertsWaitingForLock(fx);
        return waiting.length > 0 ? waiting : undefined;
      });
      for (const pid of pids) await fx.pool.query(sql.unsafe`SELECT pg_cancel_backend(${pid})`);
      await waitFor("the cancel to be retried", () => /57014/.test(run.stderrSoFar()), 10_000);
      await lock.release();
      const result = await exitWithin(run, 60_000);
      expect(result.code, result.stderr.slice(-800)).toBe(0);
      expect(waitingLines(result.stderr).some((l) => /"waiting_for":"postgres"/.test(l))).toBe(true);
      await expectLoadedOnce(fx, bodies.length);
      expect(await receiveAll(fx.sqs, fx.dlqUrl)).toHaveLength(0);
      expectNoPii(result.stdout + result.stderr, rawPii(bodies));
    } finally {
      await lock.release();
    }
  });

  it("waits out a lock held past its statement deadline (57014, statement timeout), then loads", async () => {
    f = await fixture();
    const fx = f;
    const bodies = sampleBodies(100, 0, 52);
    const lock = await lockUserLogins(fx);
    let run: RunningTool;
    try {
      await sendBodies(fx.sqs, fx.queueUrl, bodies);
      run = start(["--drain", "--batch-size", "25"], fx.env);
      await waitFor("an INSERT waiting for the lock", async () => (await waitingForLock(fx)) > 0);
      // The tool's statement deadline is 10 s: hold the lock past it.
      await waitFor("the statement timeout", () => /57014/.test(run.stderrSoFar()), 20_000);
      expect(run.child.exitCode).toBeNull();
    } finally {
      await lock.release();
    }
    const result = await exitWithin(run, 60_000);
    expect(result.code, result.stderr.slice(-800)).toBe(0);
    await expectLoadedOnce(fx, bodies.length);
    expect(await receiveAll(fx.sqs, fx.dlqUrl)).toHaveLength(0);
  });

  it("exits 0 on SIGTERM while it waits out a lock held past its statement deadline", async () => {
    f = await fixture();
    const fx = f;
    const bodies = sampleBodies(60, 0, 53);
    const lock = await lockUserLogins(fx);
    try {
      await sendBodies(fx.sqs, fx.queueUrl, bodies);
      const run = start(["--batch-size", "20"], { ...fx.env, STOP_GRACE_SECONDS: "5" });
      await waitFor("the statement timeout", () => /57014/.test(run.stderrSoFar()), 25_000);
      const signalledAt = Date.now();
      run.child.kill("SIGTERM");
      const result = await exitWithin(run, 20_000);
      expect(result.code, result.stderr.slice(-800)).toBe(0);
      expect(Date.now() - signalledAt).toBeLessThan(10_000);
    } finally {
      await lock.release();
    }
    // Nothing lost: what was released loads now.
    const again = await runTool(["--drain", "--batch-size", "20"], fx.env);
    expect(again.code).toBe(0);
    await expectLoadedOnce(fx, bodies.length);
  });

  it("waits out a read-only server (25006), as during a failover, and loads once it takes writes again", async () => {
    f = await fixture();
    const fx = f;
    const bodies = sampleBodies(60, 0, 55);
    const database = await fx.pool.oneFirst(sql.unsafe`SELECT current_database()`) as string;
    /** New sessions of the tool's database are read-only (or not); its open ones are cut, so it reconnects. */
    const readOnly = async (on: boolean) => {
      await fx.pool.query(
        on
          ? sql.unsafe`ALTER DATABASE ${sql.identifier([database])} SET default_transaction_read_only = on`
          : sql.unsafe`ALTER DATABASE ${sql.identifier([database])} RESET default_transaction_read_only`,
      );
      await fx.pool.query(sql.unsafe`
        SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE datname = current_database() AND application_name = 'masker-under-test'`);
    };
    const run = start(["--batch-size", "10"], {
      ...fx.env,
      DATABASE_URL: `${fx.databaseUrl}${fx.databaseUrl.includes("?") ? "&" : "?"}application_name=masker-under-test`,
    });
    await waitFor("consuming", () => /"msg":"consuming"/.test(run.stderrSoFar()), 30_000);
    try {
      await readOnly(true);
      await sendBodies(fx.sqs, fx.queueUrl, bodies);
      await waitFor("a write refused as read-only", () => /25006/.test(run.stderrSoFar()), 20_000);
      expect(run.child.exitCode).toBeNull();
    } finally {
      await readOnly(false);
    }
    await waitFor("every row", async () => (await countRows(fx.pool)) === bodies.length, 30_000);
    run.child.kill("SIGTERM");
    const result = await exitWithin(run, 30_000);
    expect(result.code, result.stderr.slice(-800)).toBe(0);
    await expectLoadedOnce(fx, bodies.length);
  });

  it("waits out SQS throttling (ThrottlingException, OverLimit, RequestThrottled) on receive, and loads all", async () => {
    f = await fixture();
    const fx = f;
    sqsProxy = await startSqsFaultProxy(fx.endpoint);
    const proxy = sqsProxy;
    const bodies = sampleBodies(80, 0, 54);
    await sendBodies(fx.sqs, fx.queueUrl, bodies);
    // Each kind twice: one receive is in flight until the first answers, so every fault is
    // waited out in turn (the SDK's own three attempts, then our backoff), and more only add time.
    proxy.fail("ReceiveMessage", 6, [OVER_LIMIT, THROTTLING, REQUEST_THROTTLED]);
    const result = await exitWithin(
      start(["--drain", "--batch-size", "20"], {
        ...fx.env,
        AWS_ENDPOINT_URL: proxy.via(fx.endpoint),
        QUEUE_URL: proxy.via(fx.queueUrl),
        DLQ_URL: proxy.via(fx.dlqUrl),
      }),
      60_000,
    );
    expect(result.code, result.stderr.slice(-800)).toBe(0);
    expect(proxy.faulted).toBe(6);
    expect(waitingLines(result.stderr).some((l) => /"waiting_for":"sqs"/.test(l))).toBe(true);
    await expectLoadedOnce(fx, bodies.length);
  });
});

/** Hold the lock every starter takes for its schema transaction, as another starter or a migration would. */
async function holdStartupLock(fx: Fixture): Promise<{ release(): Promise<void> }> {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let locked!: () => void;
  const lockTaken = new Promise<void>((resolve) => (locked = resolve));
  const holder = fx.pool.transaction(async (tx) => {
    await tx.query(sql.unsafe`SELECT pg_advisory_xact_lock(hashtext('sqs-login-masker schema'))`);
    locked();
    await released;
  });
  await Promise.race([lockTaken, holder]);
  return {
    async release() {
      release();
      await holder;
    },
  };
}

describe("start-up waits", { timeout: 90_000 }, () => {
  it("waits out its schema transaction held past the statement deadline, then loads", async () => {
    f = await fixture();
    const fx = f;
    const bodies = sampleBodies(20, 0, 61);
    await sendBodies(fx.sqs, fx.queueUrl, bodies);
    const lock = await holdStartupLock(fx);
    let run: RunningTool;
    try {
      run = start(["--drain"], fx.env);
      await waitFor("the statement timeout at start", () => /57014/.test(run.stderrSoFar()), 25_000);
      expect(run.child.exitCode).toBeNull();
    } finally {
      await lock.release();
    }
    const result = await exitWithin(run, 40_000);
    expect(result.code, result.stderr.slice(-800)).toBe(0);
    expect(waitingLines(result.stderr).length).toBeGreaterThan(0);
    await expectLoadedOnce(fx, bodies.length);
  });

  it("exits 0 on SIGTERM during start-up", async () => {
    f = await fixture();
    const fx = f;
    const lock = await holdStartupLock(fx);
    try {
      const run = start(["--drain"], fx.env);
      await waitFor("a session waiting for the start-up lock", async () => (await waitingForLock(fx)) > 0);
      const signalledAt = Date.now();
      run.child.kill("SIGTERM");
      const result = await exitWithin(run, 15_000);
      expect(result.code, result.stderr.slice(-800)).toBe(0);
      expect(Date.now() - signalledAt).toBeLessThan(5_000);
    } finally {
      await lock.release();
    }
  });
});

/** The numbers of the summary line the CLI prints on exit. */
function summaryOf(stdout: string): Record<string, number> {
  const line = stdout.split("\n").find((l) => l.startsWith("loaded="));
  if (!line) throw new Error("no summary line");
  return Object.fromEntries(line.split(" ").map((kv) => kv.split("=")).map(([k, v]) => [k, Number.parseFloat(v!)]));
}

describe("commit ambiguity", { timeout: 90_000 }, () => {
  it("counts a batch whose COMMIT answer was lost once, as loaded, and writes it once", async () => {
    f = await fixture();
    const fx = f;
    pgProxy = await startTcpProxy(fx.databaseUrl);
    const proxy = pgProxy;
    const bodies = sampleBodies(300, 0, 71);
    await sendBodies(fx.sqs, fx.queueUrl, bodies);
    const run = start(["--drain", "--batch-size", "10", "--concurrency", "2"], {
      ...fx.env,
      DATABASE_URL: proxy.via(fx.databaseUrl),
    });
    await waitFor("the first rows", async () => (await countRows(fx.pool)) > 0, 30_000, 20);
    proxy.dropCommitAnswers(8);
    const result = await exitWithin(run, 60_000);
    expect(result.code, result.stderr.slice(-800)).toBe(0);
    expect(proxy.droppedCommits).toBe(8);
    await expectLoadedOnce(fx, bodies.length);
    const summary = summaryOf(result.stdout);
    console.log("commit ambiguity: 8 COMMIT answers dropped;", summary);
    expect({ loaded: summary.loaded, duplicates: summary.duplicates }).toEqual({ loaded: 300, duplicates: 0 });
  });
});

describe("--drain", { timeout: 90_000 }, () => {
  it("does not end early when SQS's redrive moved the messages it left in the queue", async () => {
    // A DLQ too small for the invalid bodies: the tool leaves them to the queue's redrive
    // policy (1 receive), which moves them at their next receive.
    f = await createFixture({ dlqMaximumMessageSize: 256 * 1024, visibilityTimeout: 2, maxReceiveCount: 1 });
    const fx = f;
    await ensureSchema(fx.pool);
    const tooBig = Array.from({ length: 5 }, (_, i) => `not json ${i} `.repeat(300 * 1024 / 12));
    for (const body of tooBig) await sendBodies(fx.sqs, fx.queueUrl, [body]);
    const valid = sampleBodies(3, 0, 81);
    await fx.sqs.send(
      new SendMessageBatchCommand({
        QueueUrl: fx.queueUrl,
        Entries: valid.map((body, i) => ({ Id: String(i), MessageBody: body, DelaySeconds: 8 })),
      }),
    );
    const result = await exitWithin(start(["--drain"], fx.env), 60_000);
    expect(result.code, result.stderr.slice(-800)).toBe(0);
    expect(await countRows(fx.pool), result.stderr.slice(-3000)).toBe(valid.length);
    await expectLoadedOnce(fx, valid.length);
    expect(await receiveAll(fx.sqs, fx.dlqUrl)).toHaveLength(tooBig.length);
  });
});

describe("a queue with VisibilityTimeout=0", { timeout: 90_000 }, () => {
  it("holds what it receives with a visibility of its own, with one warning: no spin, no DLQ flood", async () => {
    f = await createFixture({ visibilityTimeout: 0 });
    const fx = f;
    await ensureSchema(fx.pool);
    const valid = sampleBodies(60, 0, 91);
    const invalid = INVALID_BODIES.slice(0, 3).map((i) => i.body);
    await sendBodies(fx.sqs, fx.queueUrl, [...valid, ...invalid]);
    const result = await exitWithin(start(["--drain", "--batch-size", "20"], fx.env), 45_000);
    expect(result.code, result.stderr.slice(-800)).toBe(0);
    await expectLoadedOnce(fx, valid.length);
    expect(await receiveAll(fx.sqs, fx.dlqUrl)).toHaveLength(invalid.length);
    const summary = summaryOf(result.stdout);
    expect(summary.duplicates).toBe(0);
    expect(
      result.stderr.split("\n").filter((l) => /visibility timeout is too short/.test(l) && /"level":"warn"/.test(l)),
    )
      .toHaveLength(1);
  });
});
