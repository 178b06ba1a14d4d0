/**
 * Benchmark: how fast the tool drains a backlog, next to the fastest bare client and the
 * usual per-message consumer, on the same emulator and Postgres.
 *
 * ```sh
 * npm run bench                                   # N = 100 000, every phase, a table
 * npm run bench -- --n 1000000 --phases tool --strategies hmac   # peak RSS at a million
 * npm run bench -- --n 300 --json                 # for machines (CI runs this)
 * npm run bench -- --phases large --large-n 600     # memory with SQS's largest bodies
 * ```
 *
 * The SQS emulator (fauxqs) runs as its own process, as a real queue would, and Postgres is
 * embedded unless `DATABASE_URL` names a server. Each phase gets a fresh queue preloaded
 * with the same messages and a fresh database, so no phase sees another's leftovers. The
 * messages repeat as a real login stream does (`--corpus logins`: N/10 users, each with
 * their own devices and addresses; see `createLoginStream`), or are all different
 * (`--corpus unique`). Phases:
 *
 * - `ceiling`: a bare SDK client receiving 10 at a time with several receives in flight and
 *   deleting in batches of 10; no parsing, no database. The fastest anyone drains this queue.
 * - `tool`: `mod.ts --drain` as a child process (`node --import tsx`, as users run it), timed
 *   from spawn to exit, with its peak RSS (VmHWM) read from /proc while it runs.
 * - `large`: the tool again (`hmac`), on bodies of nearly SQS's 1 MiB limit (valid logins
 *   padded with a field the tool ignores): what bounds its memory is `--max-in-flight-mb`,
 *   not the number of messages, and its peak RSS says whether that holds.
 * - `baseline`: one message per receive, a new database connection and one insert per
 *   message, one delete per message; run on a smaller N since it is slow.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { availableParallelism, cpus } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import {
  DeleteMessageBatchCommand,
  DeleteMessageCommand,
  DeleteQueueCommand,
  ReceiveMessageCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import { createPool, sql } from "slonik";
import { parseCount, parseFlags } from "../src/config.ts";
import { ConfigError } from "../src/errors.ts";
import { loadStrategy } from "../src/masking.ts";
import { readQueueDepth } from "../src/sqs.ts";
import { hmacSha256Hex } from "../strategies/hmac.ts";
import { runScript } from "./_command.ts";
import {
  attachEmulator,
  emulatorClient,
  emulatorEnv,
  type PostgresServer,
  type SqsEmulator,
  startBoth,
  usePostgres,
} from "./embedded.ts";
import { createLoginStream, sampleBodies, sendBodies } from "./produce.ts";
import { generateRecoveryKeyPair } from "../strategies/_vault-crypto.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** A key for the benchmark's own throwaway data; never a real secret. */
const BENCH_HMAC_KEY = "bench-only-key-".repeat(3);
/** Entries are sealed to a throwaway pair's public half; the benchmark opens none. */
const BENCH_RECOVERY_PUBLIC_KEY = generateRecoveryKeyPair().publicKey;
/** The strategies' keys the tool gets here: throwaway ones (or the caller's vault keys), never real secrets. */
function toolKeys(strategy: string): Record<string, string> {
  return {
    MASK_HMAC_KEY: BENCH_HMAC_KEY,
    VAULT_TOKEN_KEY: process.env.VAULT_TOKEN_KEY ?? randomBytes(32).toString("hex"),
    VAULT_RECOVERY_PUBLIC_KEY: process.env.VAULT_RECOVERY_PUBLIC_KEY ?? BENCH_RECOVERY_PUBLIC_KEY,
    // ipcrypt takes a 16-byte key, ipcrypt-pfx a 32-byte one; the others ignore it.
    MASK_IPCRYPT_KEY: randomBytes(strategy === "ipcrypt" ? 16 : 32).toString("hex"),
  };
}
const PHASES = ["ceiling", "tool", "large", "baseline"] as const;
/** A `large` phase body: SQS's 1 MiB limit less room for the JSON around the padding. */
const LARGE_BODY_BYTES = 1_040_000;
type Phase = (typeof PHASES)[number];
const CORPORA = ["logins", "unique"] as const;
type Corpus = (typeof CORPORA)[number];
/** Logins per user, on average, in the `logins` corpus. */
const LOGINS_PER_USER = 10;

/** What one bench run is asked to do. */
export interface BenchOptions {
  n: number;
  /** Messages for the slow per-message baseline. */
  baselineN: number;
  /** Messages of nearly 1 MiB for the `large` phase. */
  largeN: number;
  phases: Phase[];
  strategies: string[];
  /** Receives in flight for the ceiling client. */
  ceilingConcurrency: number;
  /** Extra flags passed to the tool, e.g. `--batch-size 200`. */
  toolArgs: string[];
  /** The checkout whose `mod.ts` the tool phases run: this one, or another for a paired run. */
  toolDir: string;
  /** `logins`: users who come back, from their own devices and addresses; `unique`: every message different. */
  corpus: Corpus;
  json: boolean;
}

/** One measured phase. `rate` is messages per second. */
export interface PhaseResult {
  phase: Phase;
  strategy?: string;
  status: "ok" | "skipped" | "failed";
  /** Why a phase was skipped or failed. */
  note?: string;
  n: number;
  /** Messages taken off the queue (ceiling, baseline) or rows loaded (tool). */
  done: number;
  /** Messages still in the queue afterwards, visible or not. */
  leftInQueue: number;
  seconds: number;
  rate: number;
  peakRssMb?: number;
  /**
   * CPU seconds spent during the phase by the consumer (the bare client or the tool), the
   * emulator and Postgres: where the machine's cores went. Absent where /proc is not.
   */
  cpu?: CpuSplit;
  toCeiling?: number;
  toBaseline?: number;
}

export interface CpuSplit {
  consumer: number;
  emulator: number;
  postgres: number;
}

/** The whole run, as `--json` prints it. */
export interface BenchReport {
  machine: { nproc: number; cpu: string; node: string };
  options: Omit<BenchOptions, "json">;
  results: PhaseResult[];
}

const DEFAULT_STRATEGIES = "hmac,sha256,vault,ipcrypt,ipcrypt-pfx";

const HELP = `Usage: npx tsx scripts/bench.ts [options]      (or: npm run bench -- [options])

How fast the tool drains a backlog, beside the fastest bare SQS client (the ceiling) and a
message-at-a-time consumer (the baseline), on the same emulator (its own process) and
Postgres (embedded, or the server DATABASE_URL names).

  --n N                     messages per phase (default 100000)
  --baseline-n N            messages for the slow baseline (default: --n, at most 1000)
  --large-n N               messages of nearly 1 MiB for the large phase (default 300)
  --phases LIST             which of ceiling,tool,large,baseline to run (default: all)
  --strategies LIST         strategies for the tool phase (default ${DEFAULT_STRATEGIES})
  --ceiling-concurrency N   receives in flight for the ceiling client (default 16)
  --tool-args="FLAGS"       extra flags for the tool, e.g. --tool-args="--batch-size 200"
  --tool-dir DIR            run the mod.ts of another checkout (with its node_modules) on
                            the same corpus and services: before/after in paired runs
  --corpus logins|unique    logins: users who come back, from their own devices and addresses
                            (default); unique: every message different (docs/benchmark.md)
  --json                    print the report as JSON instead of a table
  -h, --help                show this help

Exit codes: 0 every phase ran, 1 a phase failed, 2 usage or configuration error.
`;

/** Largest --n: a million took minutes here; a hundred million is far beyond any use. */
const MAX_N = 100_000_000;

/** Check every flag before anything starts; undefined for --help. */
async function parseOptions(argv: readonly string[]): Promise<BenchOptions | undefined> {
  const values = parseFlags(argv, {
    n: { type: "string" },
    "baseline-n": { type: "string" },
    "large-n": { type: "string" },
    phases: { type: "string" },
    strategies: { type: "string" },
    "ceiling-concurrency": { type: "string" },
    "tool-args": { type: "string" },
    "tool-dir": { type: "string" },
    corpus: { type: "string" },
    json: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) return undefined;
  const flag = (name: string) => values[name] as string | undefined;
  const n = parseCount(flag("n"), "--n", 100_000, 1, MAX_N);
  const phases = (flag("phases") ?? PHASES.join(",")).split(",").filter(Boolean);
  const unknown = phases.filter((p) => !(PHASES as readonly string[]).includes(p));
  if (unknown.length > 0) throw new ConfigError(`--phases takes ${PHASES.join(", ")}, got "${unknown.join(",")}"`);
  const corpus = flag("corpus") ?? "logins";
  if (!(CORPORA as readonly string[]).includes(corpus)) {
    throw new ConfigError(`--corpus takes ${CORPORA.join(" or ")}, got "${corpus}"`);
  }
  const strategies = (flag("strategies") ?? DEFAULT_STRATEGIES).split(",").filter(Boolean);
  // As the tool will load them, with the keys it will get: a bad name fails now, not mid-run.
  for (const strategy of strategies) await loadStrategy(strategy, { env: toolKeys(strategy) });
  return {
    n,
    // About ten seconds of the slow consumer is enough for a steady rate.
    baselineN: parseCount(flag("baseline-n"), "--baseline-n", Math.min(n, 1_000), 1, MAX_N),
    largeN: parseCount(flag("large-n"), "--large-n", 300, 1, MAX_N),
    phases: phases as Phase[],
    strategies,
    ceilingConcurrency: parseCount(flag("ceiling-concurrency"), "--ceiling-concurrency", 16, 1, 256),
    toolArgs: (flag("tool-args") ?? "").split(" ").filter(Boolean),
    toolDir: checkToolDir(flag("tool-dir")),
    corpus: corpus as Corpus,
    json: values.json === true,
  };
}

/** The checkout `--tool-dir` names, checked to hold a mod.ts and tsx; this one by default. */
function checkToolDir(raw: string | undefined): string {
  if (raw === undefined) return ROOT;
  const dir = resolve(raw);
  for (const needed of ["mod.ts", "node_modules/tsx/package.json"]) {
    if (!existsSync(join(dir, needed))) {
      throw new ConfigError(`--tool-dir ${raw} has no ${needed}: give a checkout with its dependencies installed`);
    }
  }
  return dir;
}

// ---------------------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------------------

/**
 * fauxqs in its own process, so its CPU is not the bench's. It needs Node >= 22.5: spawn
 * with this process's Node, not whatever `node` is first on PATH.
 */
async function startEmulatorProcess(): Promise<SqsEmulator & { pid: number }> {
  const script = `
    import { startFauxqs } from "fauxqs";
    const server = await startFauxqs({ port: 0, logger: false, host: "localhost", defaultRegion: "us-east-1" });
    process.stdout.write(server.address + "\\n");
    process.on("SIGTERM", () => server.stop().then(() => process.exit(0)));`;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const address = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d) => {
      out += d;
      if (out.includes("\n")) resolve(out.trim());
    });
    child.once("exit", (code) => reject(new Error(`SQS emulator exited with code ${code} before it listened`)));
  });
  const endpoint = address.replace("localhost", "127.0.0.1");
  const emulator = attachEmulator(endpoint, "us-east-1", async () => {
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    await exited;
  });
  return { ...emulator, pid: child.pid! };
}

interface Stage {
  queueUrl: string;
  databaseUrl: string;
  drop(): Promise<void>;
}

/** The corpus's bodies, a slice at a time: the same for every phase of a run. */
function createCorpus(corpus: Corpus, count: number): (size: number) => string[] {
  if (corpus === "unique") {
    let made = 0;
    return (size) => sampleBodies(size, 0, (made += size) - size + 1);
  }
  const next = createLoginStream(1, Math.max(1, Math.round(count / LOGINS_PER_USER)));
  return (size) => Array.from({ length: size }, next);
}

/**
 * A fresh queue holding `count` messages and a fresh database, for one phase; with
 * `bodyBytes`, each body is padded to that size.
 */
async function stage(
  emulator: SqsEmulator,
  sqs: SQSClient,
  postgres: PostgresServer,
  name: string,
  count: number,
  corpus: Corpus,
  bodyBytes?: number,
): Promise<Stage> {
  // A strategy may be a module path: keep what queue and database names allow.
  const id = `${name.replace(/\.[cm]?[jt]s$/, "").replace(/[^a-z0-9]+/gi, "_").slice(-40).toLowerCase()}_${
    randomBytes(3).toString("hex")
  }`;
  // Long enough that no message comes back while the slowest phase is still working.
  const queueUrl = await emulator.createQueue(`bench-${id}`.replace(/_/g, "-"), { VisibilityTimeout: "120" });
  // Made and sent in slices so a million bodies never sit in memory at once.
  const slice = bodyBytes ? 32 : 20_000;
  const bodies = createCorpus(corpus, count);
  for (let sent = 0; sent < count; sent += slice) {
    const some = bodies(Math.min(slice, count - sent));
    if (!bodyBytes) {
      await sendBodies(sqs, queueUrl, some, 32);
      continue;
    }
    // One per call: SQS takes 1 MiB per call.
    const padded = some.map((body) => body.slice(0, -1) + `,"padding":"${"p".repeat(bodyBytes - body.length - 14)}"}`);
    await Promise.all(padded.map((body) => sendBodies(sqs, queueUrl, [body], 1)));
  }
  const databaseUrl = await postgres.createDatabase(`bench_${id}`);
  return {
    queueUrl,
    databaseUrl,
    async drop() {
      await sqs.send(new DeleteQueueCommand({ QueueUrl: queueUrl }));
      const pool = await createPool(postgres.url, { maxPoolSize: 1 });
      try {
        await pool.query(sql.unsafe`DROP DATABASE IF EXISTS ${sql.identifier([`bench_${id}`])} WITH (FORCE)`);
      } finally {
        await pool.end();
      }
    },
  };
}

/** Messages in a queue, in any state. */
async function queueDepth(sqs: SQSClient, queueUrl: string): Promise<number> {
  const { visible, inFlight, delayed } = await readQueueDepth(sqs, queueUrl);
  return visible + inFlight + delayed;
}

async function countRows(databaseUrl: string): Promise<number> {
  const pool = await createPool(databaseUrl, { maxPoolSize: 1 });
  try {
    const exists = await pool.oneFirst(sql.unsafe`SELECT to_regclass('user_logins') IS NOT NULL`);
    return exists ? Number(await pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM user_logins`)) : 0;
  } finally {
    await pool.end();
  }
}

// ---------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------

/** The fastest drain: receive 10, delete 10, `concurrency` loops, nothing else. */
async function runCeiling(
  endpoint: string,
  queueUrl: string,
  n: number,
  concurrency: number,
): Promise<{ done: number; seconds: number }> {
  const sqs = emulatorClient(endpoint);
  let done = 0;
  const started = performance.now();
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
  const seconds = (performance.now() - started) / 1000;
  sqs.destroy();
  return { done, seconds };
}

/** The little of `pg` the baseline uses (the package ships no types of its own). */
interface PgClient {
  connect(): Promise<void>;
  query(text: string, values: unknown[]): Promise<unknown>;
  end(): Promise<void>;
}

/**
 * The way a first version works: receive one, connect with the plain driver, insert,
 * disconnect, delete one. It parses and masks like the tool, so only the plumbing differs.
 */
async function runBaseline(
  endpoint: string,
  queueUrl: string,
  databaseUrl: string,
  n: number,
): Promise<{ done: number; seconds: number }> {
  const driver = "pg"; // a variable, so the type checker does not look for types pg lacks
  const { default: pg } = await import(driver) as {
    default: { Client: new (options: { connectionString: string }) => PgClient };
  };
  const connect = async () => {
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    return client;
  };
  const setup = await connect();
  await setup.query(
    `
    CREATE TABLE IF NOT EXISTS user_logins(
      user_id varchar(128), device_type varchar(32), masked_ip varchar(256),
      masked_device_id varchar(256), locale varchar(32), app_version integer, create_date date)`,
    [],
  );
  await setup.end();
  const sqs = emulatorClient(endpoint);
  const key = new TextEncoder().encode(BENCH_HMAC_KEY);
  let done = 0;
  const started = performance.now();
  while (done < n) {
    const { Messages = [] } = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: queueUrl,
        MaxNumberOfMessages: 1,
        WaitTimeSeconds: 0,
        MessageSystemAttributeNames: ["SentTimestamp"],
      }),
    );
    const message = Messages[0];
    if (!message) break;
    const body = JSON.parse(message.Body!);
    const [major, minor, patch] = String(body.app_version).split(".").map(Number) as [number, number, number];
    const client = await connect();
    try {
      await client.query("INSERT INTO user_logins VALUES ($1, $2, $3, $4, $5, $6, $7)", [
        body.user_id,
        body.device_type,
        hmacSha256Hex(key, body.ip),
        hmacSha256Hex(key, body.device_id),
        body.locale ?? null,
        major * 10_000 + minor * 100 + patch,
        new Date(Number(message.Attributes!.SentTimestamp)).toISOString().slice(0, 10),
      ]);
    } finally {
      await client.end();
    }
    await sqs.send(new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: message.ReceiptHandle! }));
    done++;
  }
  const seconds = (performance.now() - started) / 1000;
  sqs.destroy();
  return { done, seconds };
}

/** Linux's USER_HZ: /proc counts CPU time in these ticks. */
const CLOCK_TICKS_PER_SECOND = 100;

/** CPU seconds a process has used itself, and those of its children it has waited for. */
async function readCpuSeconds(pid: number | "self"): Promise<{ own: number; reaped: number } | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    // The fields after the command name, which is in parentheses and may hold spaces:
    // utime, stime, cutime and cstime are fields 14 to 17, so indexes 11 to 14 here.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ").map(Number);
    const [utime = 0, stime = 0, cutime = 0, cstime = 0] = fields.slice(11, 15);
    return { own: (utime + stime) / CLOCK_TICKS_PER_SECOND, reaped: (cutime + cstime) / CLOCK_TICKS_PER_SECOND };
  } catch {
    return undefined; // gone, or no /proc on this system
  }
}

/**
 * Every Postgres process's CPU seconds. A backend that exits is reaped by its postmaster,
 * so counting the postmaster's reaped children keeps a closed connection's time in the sum.
 */
async function postgresCpuSeconds(): Promise<number> {
  let total = 0;
  for (const entry of await readdir("/proc").catch(() => [])) {
    if (!/^\d+$/.test(entry)) continue;
    const comm = await readFile(`/proc/${entry}/comm`, "utf8").catch(() => "");
    const cpu = comm.trim() === "postgres" ? await readCpuSeconds(Number(entry)) : undefined;
    if (cpu) total += cpu.own + cpu.reaped;
  }
  return total;
}

/** CPU used so far by this process, its finished children, the emulator and Postgres. */
interface CpuMark {
  own: number;
  reapedChildren: number;
  emulator: number;
  postgres: number;
}

async function markCpu(emulatorPid: number): Promise<CpuMark | undefined> {
  const [self, emulator] = await Promise.all([readCpuSeconds("self"), readCpuSeconds(emulatorPid)]);
  if (!self || !emulator) return undefined;
  return { own: self.own, reapedChildren: self.reaped, emulator: emulator.own, postgres: await postgresCpuSeconds() };
}

/**
 * Where the cores went between two marks. The consumer is this process for the ceiling
 * and the baseline, which run in it, and the reaped child for the tool.
 */
function cpuBetween(
  start: CpuMark | undefined,
  end: CpuMark | undefined,
  consumer: "own" | "child",
): CpuSplit | undefined {
  if (!start || !end) return undefined;
  return {
    consumer: round(consumer === "own" ? end.own - start.own : end.reapedChildren - start.reapedChildren, 2),
    emulator: round(end.emulator - start.emulator, 2),
    postgres: round(end.postgres - start.postgres, 2),
  };
}

/** Peak resident memory of a live process in MB, from the kernel's high-water mark. */
async function readPeakRssMb(pid: number): Promise<number | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    const kb = /^VmHWM:\s+(\d+) kB/m.exec(status)?.[1];
    return kb === undefined ? undefined : Number(kb) / 1024;
  } catch {
    return undefined; // already gone, or no /proc on this system
  }
}

interface ToolRun {
  code: number | null;
  seconds: number;
  stdout: string;
  stderr: string;
  peakRssMb: number | undefined;
}

/**
 * Run `mod.ts --drain` the way a user does and time it from spawn to exit. VmHWM only
 * grows, so polling it every 50 ms misses at most the growth of the last 50 ms.
 */
async function runTool(
  endpoint: string,
  queueUrl: string,
  databaseUrl: string,
  strategy: string,
  messages: number,
  extra: string[],
  toolDir: string,
): Promise<ToolRun> {
  const started = performance.now();
  const child: ChildProcess = spawn(process.execPath, [
    ...(process.env.BENCH_NODE_OPTIONS?.split(" ").filter(Boolean) ?? []),
    "--import",
    "tsx",
    "mod.ts",
    "--drain",
    "--strategy",
    strategy,
    "--log-level",
    "warn",
    ...extra,
  ], {
    cwd: toolDir,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      ...emulatorEnv(endpoint),
      QUEUE_URL: queueUrl,
      DATABASE_URL: databaseUrl,
      ...toolKeys(strategy),
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  let peakRssMb: number | undefined;
  const sampler = setInterval(async () => {
    const mb = await readPeakRssMb(child.pid!);
    if (mb !== undefined) peakRssMb = Math.max(peakRssMb ?? 0, mb);
  }, 50);
  // A tool that never stops must fail the bench, not hang it: allow 30 s plus 100 msg/s.
  const limitMs = 30_000 + (messages / 100) * 1000;
  const watchdog = setTimeout(() => {
    stderr += `\nbench: no exit after ${limitMs / 1000} s, killed`;
    child.kill("SIGKILL");
  }, limitMs);
  const code = await new Promise<number | null>((resolve) => child.once("close", resolve));
  const seconds = (performance.now() - started) / 1000;
  clearTimeout(watchdog);
  clearInterval(sampler);
  return { code, seconds, stdout, stderr, peakRssMb };
}

// ---------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------

function log(options: BenchOptions, text: string): void {
  if (!options.json) process.stderr.write(`bench: ${text}\n`);
}

const round = (value: number, digits = 0) => Math.round(value * 10 ** digits) / 10 ** digits;

/** The services every phase uses: the emulator (its own process), Postgres, a client. */
interface Services {
  emulator: SqsEmulator & { pid: number };
  postgres: PostgresServer;
  sqs: SQSClient;
}

/**
 * Run the benchmark.
 *
 * @param options what to measure
 * @returns every phase's figures, with ratios filled in where both sides ran
 */
export async function runBench(options: BenchOptions): Promise<BenchReport> {
  log(options, "starting the SQS emulator (own process) and Postgres");
  const [emulator, postgres] = await startBoth(startEmulatorProcess(), usePostgres());
  const services: Services = { emulator, postgres, sqs: emulatorClient(emulator.endpoint) };
  const results: PhaseResult[] = [];
  try {
    if (options.phases.includes("ceiling")) results.push(await ceilingPhase(services, options));
    if (options.phases.includes("tool")) {
      for (const strategy of options.strategies) results.push(await toolPhase(services, options, strategy));
    }
    if (options.phases.includes("large")) results.push(await largePhase(services, options));
    if (options.phases.includes("baseline")) results.push(await baselinePhase(services, options));
  } finally {
    services.sqs.destroy();
    await Promise.all([emulator.stop(), postgres.stop()]);
  }
  addRatios(results);
  const { json: _json, ...shown } = options;
  return {
    machine: { nproc: availableParallelism(), cpu: cpus()[0]?.model ?? "unknown", node: process.version },
    options: shown,
    results,
  };
}

/** Each tool phase's rate beside the ceiling's and the baseline's. */
function addRatios(results: PhaseResult[]): void {
  const ceiling = results.find((r) => r.phase === "ceiling" && r.status === "ok");
  const baseline = results.find((r) => r.phase === "baseline" && r.status === "ok");
  for (const r of results) {
    if (r.phase !== "tool" || r.status !== "ok") continue;
    if (ceiling) r.toCeiling = round(r.rate / ceiling.rate, 2);
    if (baseline) r.toBaseline = round(r.rate / baseline.rate, 1);
  }
}

async function ceilingPhase({ emulator, postgres, sqs }: Services, options: BenchOptions): Promise<PhaseResult> {
  const s = await stage(emulator, sqs, postgres, "ceiling", options.n, options.corpus);
  log(options, `ceiling: draining ${options.n} with a bare client, ${options.ceilingConcurrency} receives in flight`);
  const before = await markCpu(emulator.pid);
  const { done, seconds } = await runCeiling(emulator.endpoint, s.queueUrl, options.n, options.ceilingConcurrency);
  const cpu = cpuBetween(before, await markCpu(emulator.pid), "own");
  const leftInQueue = await queueDepth(sqs, s.queueUrl);
  await s.drop();
  return {
    phase: "ceiling",
    status: "ok",
    n: options.n,
    done,
    leftInQueue,
    seconds: round(seconds, 2),
    rate: round(done / seconds),
    ...(cpu && { cpu }),
  };
}

async function baselinePhase({ emulator, postgres, sqs }: Services, options: BenchOptions): Promise<PhaseResult> {
  const s = await stage(emulator, sqs, postgres, "baseline", options.baselineN, options.corpus);
  log(options, `baseline: one message, one connection, one insert, one delete at a time, on ${options.baselineN}`);
  const before = await markCpu(emulator.pid);
  const { done, seconds } = await runBaseline(emulator.endpoint, s.queueUrl, s.databaseUrl, options.baselineN);
  const cpu = cpuBetween(before, await markCpu(emulator.pid), "own");
  const leftInQueue = await queueDepth(sqs, s.queueUrl);
  await s.drop();
  return {
    phase: "baseline",
    status: "ok",
    n: options.baselineN,
    done,
    leftInQueue,
    seconds: round(seconds, 2),
    rate: round(done / seconds),
    ...(cpu && { cpu }),
  };
}

async function toolPhase(services: Services, options: BenchOptions, strategy: string): Promise<PhaseResult> {
  const { emulator, postgres, sqs } = services;
  const s = await stage(emulator, sqs, postgres, strategy, options.n, options.corpus);
  log(options, `tool: mod.ts --drain --strategy ${strategy} on ${options.n}`);
  const result = await measureTool(services, s, { phase: "tool", strategy, n: options.n }, options);
  await s.drop();
  return result;
}

async function largePhase(services: Services, options: BenchOptions): Promise<PhaseResult> {
  const { emulator, postgres, sqs } = services;
  const s = await stage(emulator, sqs, postgres, "large", options.largeN, options.corpus, LARGE_BODY_BYTES);
  log(options, `large: mod.ts --drain --strategy hmac on ${options.largeN} bodies of ${LARGE_BODY_BYTES} bytes`);
  const result = await measureTool(services, s, { phase: "large", strategy: "hmac", n: options.largeN }, options);
  await s.drop();
  return result;
}

/** Run the tool on a staged queue: its time, rows, what it left, its peak memory and the CPU split. */
async function measureTool(
  { emulator, sqs }: Services,
  s: Stage,
  phase: { phase: Phase; strategy: string; n: number },
  options: BenchOptions,
): Promise<PhaseResult> {
  const before = await markCpu(emulator.pid);
  const run = await runTool(
    emulator.endpoint,
    s.queueUrl,
    s.databaseUrl,
    phase.strategy,
    phase.n,
    options.toolArgs,
    options.toolDir,
  );
  const cpu = cpuBetween(before, await markCpu(emulator.pid), "child");
  const base = { ...phase, seconds: round(run.seconds, 2) };
  if (run.code !== 0 && /not available/i.test(run.stderr)) {
    return {
      ...base,
      status: "skipped",
      note: run.stderr.trim().split("\n")[0]!,
      done: 0,
      leftInQueue: phase.n,
      rate: 0,
    };
  }
  const done = await countRows(s.databaseUrl);
  return {
    ...base,
    status: run.code === 0 ? "ok" : "failed",
    ...(run.code === 0 ? {} : { note: `exit ${run.code}: ${run.stderr.trim().split("\n").at(-1)}` }),
    done,
    leftInQueue: await queueDepth(sqs, s.queueUrl),
    rate: round(done / run.seconds),
    ...(run.peakRssMb === undefined ? {} : { peakRssMb: round(run.peakRssMb, 1) }),
    ...(cpu && { cpu }),
  };
}

/** The report as a Markdown table. */
export function formatTable(report: BenchReport): string {
  const lines = [
    `machine: ${report.machine.nproc} cores (${report.machine.cpu}), node ${report.machine.node}; corpus: ${report.options.corpus}`,
    "",
    "| phase | strategy | messages | done | left | seconds | msg/s | tool/ceiling | tool/baseline | peak RSS MB | CPU s: consumer / emulator / postgres |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const r of report.results) {
    const cells = [
      r.phase,
      r.strategy ?? "",
      r.n,
      r.done,
      r.leftInQueue,
      r.seconds,
      r.status === "ok" ? r.rate : r.status,
      r.toCeiling ?? "",
      r.toBaseline ?? "",
      r.peakRssMb ?? "",
      r.cpu ? `${r.cpu.consumer} / ${r.cpu.emulator} / ${r.cpu.postgres}` : "",
    ];
    lines.push(`| ${cells.join(" | ")} |`);
    if (r.note) lines.push(`|  | ${r.note.replace(/\|/g, "/")} |`);
  }
  return lines.join("\n");
}

async function main(argv: readonly string[]): Promise<number> {
  const options = await parseOptions(argv);
  if (!options) {
    process.stdout.write(HELP);
    return 0;
  }
  const report = await runBench(options);
  process.stdout.write(options.json ? JSON.stringify(report, null, 2) + "\n" : formatTable(report) + "\n");
  return report.results.some((r) => r.status === "failed") ? 1 : 0;
}

if (import.meta.main) process.exitCode = await runScript(() => main(process.argv.slice(2)));
