/**
 * Shared test plumbing: a fresh queue pair and database per test, the tool as a child
 * process, and readers for what landed where.
 */
import { type ChildProcess, execFile, execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { randomBytes, randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { GetQueueAttributesCommand, type Message, ReceiveMessageCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { type DatabasePool, sql } from "slonik";
import { inject } from "vitest";
import { createDatabasePool, type UserLoginRow } from "../mod.ts";
import { sqlUserLoginRow } from "../src/schema.ts";
import { DENO_PERMISSIONS, MIN_NODE_MAJOR } from "../src/runtime.ts";
import { readQueueDepth } from "../src/sqs.ts";
import { attachEmulator, emulatorClient, emulatorEnv, usePostgres } from "../scripts/embedded.ts";

export const ROOT = fileURLToPath(new URL("..", import.meta.url));
export const TEST_HMAC_KEY = "k".repeat(32) + "-test-only-key";

/** A fresh source queue, DLQ and database for one test. */
export interface Fixture {
  sqs: SQSClient;
  endpoint: string;
  queueUrl: string;
  dlqUrl: string;
  databaseUrl: string;
  pool: DatabasePool;
  env: Record<string, string>;
  close(): Promise<void>;
}

export interface FixtureOptions {
  visibilityTimeout?: number;
  /** The DLQ's own size limit in bytes (SQS's default is 1 MiB; older queues have 256 KiB). */
  dlqMaximumMessageSize?: number;
  /** Give the source queue SQS's own redrive policy to the DLQ after this many receives. */
  maxReceiveCount?: number;
}

export async function createFixture(options: FixtureOptions = {}): Promise<Fixture> {
  const endpoint = inject("sqsEndpoint");
  const id = randomBytes(4).toString("hex");
  const emulator = attachEmulator(endpoint, "us-east-1", async () => {});
  const sqs = emulatorClient(endpoint);
  const dlqUrl = await emulator.createQueue(
    `login-${id}-dlq`,
    options.dlqMaximumMessageSize === undefined
      ? undefined
      : { MaximumMessageSize: String(options.dlqMaximumMessageSize) },
  );
  const attributes: Record<string, string> = { VisibilityTimeout: String(options.visibilityTimeout ?? 30) };
  if (options.maxReceiveCount !== undefined) {
    const { Attributes = {} } = await sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: dlqUrl, AttributeNames: ["QueueArn"] }),
    );
    attributes.RedrivePolicy = JSON.stringify({
      deadLetterTargetArn: Attributes.QueueArn,
      maxReceiveCount: options.maxReceiveCount,
    });
  }
  const queueUrl = await emulator.createQueue(`login-${id}`, attributes);
  const server = await usePostgres({ DATABASE_URL: inject("postgresUrl") });
  const databaseUrl = await server.createDatabase(`t_${id}`);
  const pool = await createDatabasePool(databaseUrl);
  return {
    sqs,
    endpoint,
    queueUrl,
    dlqUrl,
    databaseUrl,
    pool,
    env: {
      ...emulatorEnv(endpoint),
      QUEUE_URL: queueUrl,
      DLQ_URL: dlqUrl,
      DATABASE_URL: databaseUrl,
      MASK_HMAC_KEY: TEST_HMAC_KEY,
    },
    async close() {
      await pool.end();
      sqs.destroy();
      await emulator.stop();
    },
  };
}

/** Every row of user_logins, typed by the row schema. */
export async function readRows(pool: DatabasePool): Promise<readonly UserLoginRow[]> {
  return await pool.any(sqlUserLoginRow`
    SELECT user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date::text
    FROM user_logins ORDER BY user_id`);
}

export async function countRows(pool: DatabasePool): Promise<number> {
  return await pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM user_logins`) as number;
}

/** Receive everything visible on a queue (deleting nothing; it becomes invisible). */
export async function receiveAll(sqs: SQSClient, queueUrl: string): Promise<Message[]> {
  const all: Message[] = [];
  for (;;) {
    const { Messages = [] } = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: queueUrl,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 0,
        MessageAttributeNames: ["All"],
        MessageSystemAttributeNames: ["All"],
        VisibilityTimeout: 600,
      }),
    );
    if (Messages.length === 0) return all;
    all.push(...Messages);
  }
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A running child: its result when it ends, the process, and its stderr so far. */
export type RunningTool = Promise<RunResult> & {
  child: ChildProcess;
  /** What the process has written to stderr so far, to wait on a log line. */
  stderrSoFar(): string;
  /** What the process has written to stdout so far. */
  stdoutSoFar(): string;
};

/** Run a command (from the project root unless `cwd` says) with only the given environment (plus PATH and HOME). */
export function runCommand(
  command: string,
  args: readonly string[],
  env: Record<string, string | undefined>,
  cwd: string = ROOT,
): RunningTool {
  const child = spawn(command, args, {
    cwd,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  const done = new Promise<RunResult>((resolve) => {
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
  }) as RunningTool;
  done.child = child;
  done.stderrSoFar = () => stderr;
  done.stdoutSoFar = () => stdout;
  return done;
}

/** Run `mod.ts` (or another script) with Node 24 through tsx, as a user would. */
export function runTool(
  args: readonly string[],
  env: Record<string, string | undefined>,
  script = "mod.ts",
): RunningTool {
  return runCommand(process.execPath, ["--import", "tsx", script, ...args], env);
}

/** Run `mod.ts` (or another script) under Deno (`denoBinary()`), with the permissions the tool names. */
export function runDeno(args: readonly string[], env: Record<string, string | undefined>, script = "mod.ts") {
  return runCommand(denoBinary(), ["run", ...DENO_PERMISSIONS, script, ...args], { DENO_NO_UPDATE_CHECK: "1", ...env });
}

export const uniqueId = () => randomUUID();

/** Messages in a queue, visible or in flight. */
export async function queueDepth(sqs: SQSClient, queueUrl: string): Promise<number> {
  const { visible, inFlight } = await readQueueDepth(sqs, queueUrl);
  return visible + inFlight;
}

/** Every raw ip and device_id in a set of bodies, wherever they parse. */
export function rawPii(bodies: readonly string[]): string[] {
  const values = new Set<string>();
  for (const body of bodies) {
    try {
      const parsed = JSON.parse(body);
      for (const key of ["ip", "device_id"]) {
        if (typeof parsed?.[key] === "string" && parsed[key].length >= 6) values.add(parsed[key]);
      }
    } catch { /* not JSON: holds no field */ }
  }
  return [...values];
}

/** Fail the test with the first raw value found in `printed`, if any (a readable failure, not a dump). */
export function expectNoPii(printed: string, values: readonly string[]): void {
  const leaked = values.find((v) => printed.includes(v));
  if (leaked !== undefined) throw new Error(`raw PII value of length ${leaked.length} found in the output`);
}

/**
 * Poll `check` until it returns a value that is not `undefined`/`false`, or fail after `timeoutMs`.
 * Tests wait on outcomes this way instead of sleeping a fixed time.
 */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 30_000,
  everyMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/** Whether a transaction is open in the database right now (a batch is mid-write). */
export async function openTransactions(pool: DatabasePool): Promise<number> {
  return await pool.oneFirst(sql.unsafe`
    SELECT count(*)::int FROM pg_stat_activity
    WHERE datname = current_database() AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()`) as number;
}

const DENO_RUNTIME = join(ROOT, "tests", "deno-runtime");

/**
 * The Deno the tests run: the npm registry's `deno` package, pinned by its own lockfile in
 * `tests/deno-runtime` and installed there on first use. Not a devDependency of the project:
 * Deno's task runner takes any `deno` in the project's `node_modules/.bin` for the command
 * `deno` in a task, runs it as JavaScript, and so breaks every task.
 */
export function denoBinary(): string {
  const binary = join(DENO_RUNTIME, "node_modules", ".bin", "deno");
  if (!existsSync(binary)) {
    execFileSync("npm", ["ci", "--no-audit", "--no-fund", "--loglevel=error"], {
      cwd: DENO_RUNTIME,
      stdio: ["ignore", "ignore", "inherit"],
    });
  }
  return binary;
}

/** Run a task from deno.json the way a user types it: `deno task NAME ARGS`, in `cwd`. */
export function runDenoTask(
  task: string,
  args: readonly string[],
  env: Record<string, string | undefined>,
  cwd: string = ROOT,
): RunningTool {
  return runCommand(denoBinary(), ["task", task, ...args], { DENO_NO_UPDATE_CHECK: "1", ...env }, cwd);
}

/**
 * Copy the project as a fresh clone would have it: every file git tracks or would add,
 * none that it ignores (so no node_modules).
 */
export async function copyProject(target: string): Promise<void> {
  const listed = await new Promise<string>((resolve, reject) => {
    execFile("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], {
      cwd: ROOT,
      maxBuffer: 16 << 20,
    }, (error, stdout) => (error ? reject(error) : resolve(stdout)));
  });
  for (const file of listed.split("\0").filter(Boolean)) {
    if (!existsSync(join(ROOT, file))) continue; // deleted in the working tree, not yet in git
    await mkdir(dirname(join(target, file)), { recursive: true });
    await copyFile(join(ROOT, file), join(target, file));
  }
}

/** A Node older than the one the tool needs: the machine's own `node`, if it is one. */
export function olderNode(): string | undefined {
  for (const candidate of ["/usr/bin/node", "/usr/local/bin/node"]) {
    try {
      const version = execFileSync(candidate, ["--version"], { encoding: "utf8" }).trim();
      if (Number(/^v(\d+)/.exec(version)?.[1]) < MIN_NODE_MAJOR) return candidate;
    } catch { /* not there */ }
  }
  return undefined;
}

/**
 * A TMPDIR for one run, to see what it leaves behind. Readable by others: as root, embedded
 * Postgres runs as a `postgres` user who must read the password file it puts there.
 */
export async function emptyTempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "login-masker-tmp-"));
  await chmod(dir, 0o755);
  return dir;
}

/** Take `LOCK TABLE user_logins IN ACCESS EXCLUSIVE MODE` in a session of the test's own, until `release`. */
export async function lockUserLogins(fx: Fixture): Promise<{ release(): Promise<void> }> {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let locked!: () => void;
  const lockTaken = new Promise<void>((resolve) => (locked = resolve));
  const holder = fx.pool.transaction(async (tx) => {
    await tx.query(sql.unsafe`LOCK TABLE user_logins IN ACCESS EXCLUSIVE MODE`);
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

/** Sessions of the test's database waiting for a lock. */
export async function waitingForLock(fx: Fixture): Promise<number> {
  return await fx.pool.oneFirst(sql.unsafe`
    SELECT count(*)::int FROM pg_stat_activity
    WHERE datname = current_database() AND wait_event_type = 'Lock'`) as number;
}
