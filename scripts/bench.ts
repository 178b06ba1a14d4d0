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
 *   It runs as its own process (`bench/ceiling.ts`), timed and measured as the tool is.
 * - `sqs-consumer`: the usual Node consumer (bbc/sqs-consumer), 4 instances by default, one
 *   insert through a pool and one delete per message; its own process too.
 * - `tool`: `mod.ts --drain` as a child process (`node mod.ts`: Node strips the types; or
 *   with `--entry bundle` the single file the image runs), timed from spawn to exit, with its peak RSS (VmHWM) read from /proc while it runs.
 * - `large`: the tool again (`hmac`), on bodies of nearly SQS's 1 MiB limit (valid logins
 *   padded with a field the tool ignores): what bounds its memory is `--max-in-flight-mb`,
 *   not the number of messages, and its peak RSS says whether that holds.
 * - `baseline`: one message per receive, a new database connection and one insert per
 *   message, one delete per message; run on a smaller N since it is slow.
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { availableParallelism, cpus } from "node:os";
import type { SQSClient } from "@aws-sdk/client-sqs";
import { runScript } from "./_command.ts";
import { emulatorClient, type PostgresServer, type SqsEmulator, startBoth, usePostgres } from "./embedded.ts";
import { runBaseline } from "./bench/clients.ts";
import { cpuBetween, type CpuSplit, markCpu, postmasterOf, round } from "./bench/cpu.ts";
import { loadPg } from "./bench/per-message.ts";
import { type BenchOptions, HELP, LARGE_BODY_BYTES, parseOptions, type Phase } from "./bench/options.ts";
import { countRows, queueDepth, type Stage, stage, startEmulatorProcess } from "./bench/stage.ts";
import { startLatencyProxy } from "./bench/latency-proxy.ts";
import { type ChildRun, runCeiling, runSqsConsumer, runTool } from "./bench/children.ts";

export type { BenchOptions } from "./bench/options.ts";
export type { CpuSplit } from "./bench/cpu.ts";

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
  /** The tool's CPU per message over the bare client's, in the same round. */
  cpuToCeiling?: number;
  toBaseline?: number;
  /** The tool's rate over sqs-consumer's, in the same round. */
  toSqsConsumer?: number;
  /** Which round of `--repeat` (from 1). */
  round: number;
  /** The checkout the tool ran from, when `--tool-dir` names more than one. */
  toolDir?: string;
}

/** The whole run, as `--json` prints it. */
export interface BenchReport {
  machine: { nproc: number; cpu: string; node: string };
  options: Omit<BenchOptions, "json">;
  results: PhaseResult[];
  /** With `--repeat` above 1: each strategy's (and checkout's) ratios, the median over its rounds. */
  medians: RatioMedian[];
}

/** The median of a tool's ratios over the rounds: single rounds here move by a fifth. */
export interface RatioMedian {
  strategy: string;
  toolDir?: string;
  rounds: number;
  toCeiling?: number;
  cpuToCeiling?: number;
  toSqsConsumer?: number;
}

// ---------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------

function log(options: BenchOptions, text: string): void {
  if (!options.json) process.stderr.write(`bench: ${text}\n`);
}

/** The services every phase uses: the emulator (its own process), Postgres, a client. */
interface Services {
  emulator: SqsEmulator & { pid: number };
  /** Where the ceiling and the tool reach SQS: the emulator, or a proxy adding latency. */
  sqsEndpoint: string;
  postgres: PostgresServer;
  sqs: SQSClient;
  /** The bench's Postgres server process, whose CPU is counted (undefined: not on this machine). */
  postmaster: number | undefined;
  /** What `node` runs in each tool checkout: `mod.ts`, or the single file built for this run. */
  entryFiles: Map<string, string>;
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
  const proxy = options.latencyMs > 0 ? await startLatencyProxy(emulator.endpoint, options.latencyMs) : undefined;
  const services: Services = {
    emulator,
    sqsEndpoint: proxy?.endpoint ?? emulator.endpoint,
    postgres,
    sqs: emulatorClient(emulator.endpoint),
    postmaster: await findPostmaster(postgres.url),
    entryFiles: new Map(),
  };
  const results: PhaseResult[] = [];
  try {
    for (const dir of options.toolDirs) {
      services.entryFiles.set(dir, options.entry === "bundle" ? await buildBundle(dir, options) : "mod.ts");
    }
    for (let round = 1; round <= options.repeat; round++) {
      if (options.phases.includes("ceiling")) results.push(await ceilingPhase(services, options, round));
      if (options.phases.includes("tool")) {
        // A B, then B A: drift over a run weighs on both checkouts alike.
        const dirs = round % 2 === 1 ? options.toolDirs : [...options.toolDirs].reverse();
        for (const strategy of options.strategies) {
          for (const dir of dirs) results.push(await toolPhase(services, options, strategy, dir, round));
        }
      }
      // Last in its round: its insert per message leaves Postgres busy (autovacuum) for a while.
      if (options.phases.includes("sqs-consumer")) results.push(await sqsConsumerPhase(services, options, round));
    }
    if (options.phases.includes("large")) results.push(await largePhase(services, options));
    if (options.phases.includes("baseline")) results.push(await baselinePhase(services, options));
  } finally {
    services.sqs.destroy();
    await proxy?.close();
    await Promise.all([emulator.stop(), postgres.stop()]);
  }
  addRatios(results);
  const { json: _json, ...shown } = options;
  return {
    machine: { nproc: availableParallelism(), cpu: cpus()[0]?.model ?? "unknown", node: process.version },
    options: shown,
    results,
    medians: options.repeat > 1 ? medianRatios(results) : [],
  };
}

/** The server process behind `url`, asked through a backend of its own. */
async function findPostmaster(url: string): Promise<number | undefined> {
  const pg = await loadPg();
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query("SELECT pg_backend_pid() AS pid", []) as { rows: Array<{ pid: number }> };
    return await postmasterOf(rows[0]!.pid);
  } finally {
    await client.end();
  }
}

/**
 * `npm run bundle` in a checkout, so its tool phases run the file the image runs; into the
 * checkout's scratch folder, or its dist/ where its bundle script takes no `--out`.
 */
async function buildBundle(dir: string, options: BenchOptions): Promise<string> {
  log(options, `building the single file in ${dir}`);
  const out = join(dir, ".scratch", "bench", "sqs-login-masker.mjs");
  await rm(out, { force: true });
  const run = spawnSync(process.execPath, ["scripts/bundle.ts", "--out", out], { cwd: dir, encoding: "utf8" });
  if (run.status !== 0) throw new Error(`npm run bundle failed in ${dir}: ${(run.stderr || run.stdout).trim()}`);
  return existsSync(out) ? out : join(dir, "dist", "sqs-login-masker.mjs");
}

/** Each tool phase's rate and CPU per message beside its round's ceiling, and its rate beside the baseline's. */
function addRatios(results: PhaseResult[]): void {
  const baseline = results.find((r) => r.phase === "baseline" && r.status === "ok");
  const cpuPerMessage = (r: PhaseResult) => (r.cpu && r.done > 0 ? r.cpu.consumer / r.done : undefined);
  for (const r of results) {
    if (r.phase !== "tool" || r.status !== "ok") continue;
    const ceiling = results.find((c) => c.phase === "ceiling" && c.status === "ok" && c.round === r.round);
    if (ceiling) {
      r.toCeiling = round(r.rate / ceiling.rate, 2);
      const [tool, bare] = [cpuPerMessage(r), cpuPerMessage(ceiling)];
      if (tool !== undefined && bare) r.cpuToCeiling = round(tool / bare, 2);
    }
    const sqsConsumer = results.find((c) => c.phase === "sqs-consumer" && c.status === "ok" && c.round === r.round);
    if (sqsConsumer) r.toSqsConsumer = round(r.rate / sqsConsumer.rate, 1);
    if (baseline) r.toBaseline = round(r.rate / baseline.rate, 1);
  }
}

/** Each strategy's (and checkout's) ratios over its rounds, the median of each. */
export function medianRatios(results: PhaseResult[]): RatioMedian[] {
  const groups = new Map<string, PhaseResult[]>();
  for (const r of results) {
    if (r.phase !== "tool" || r.status !== "ok") continue;
    const key = `${r.strategy}\0${r.toolDir ?? ""}`;
    groups.set(key, [...groups.get(key) ?? [], r]);
  }
  return [...groups.values()].map((rounds) => {
    const median = (pick: (r: PhaseResult) => number | undefined) => {
      const values = rounds.map(pick).filter((v): v is number => v !== undefined).sort((a, b) => a - b);
      if (values.length === 0) return undefined;
      const middle = values.length >> 1;
      return round(values.length % 2 ? values[middle]! : (values[middle - 1]! + values[middle]!) / 2, 2);
    };
    const [first] = rounds as [PhaseResult];
    const medians: RatioMedian = {
      strategy: first.strategy!,
      ...(first.toolDir && { toolDir: first.toolDir }),
      rounds: rounds.length,
    };
    for (const key of ["toCeiling", "cpuToCeiling", "toSqsConsumer"] as const) {
      const value = median((r) => r[key]);
      if (value !== undefined) medians[key] = value;
    }
    return medians;
  });
}

async function ceilingPhase(services: Services, options: BenchOptions, roundNumber: number): Promise<PhaseResult> {
  log(options, `ceiling: draining ${options.n} with a bare client, ${options.ceilingConcurrency} receives in flight`);
  return await measureChild(
    services,
    { phase: "ceiling", n: options.n, round: roundNumber },
    options,
    (s) => runCeiling(services.sqsEndpoint, s.queueUrl, options.n, options.ceilingConcurrency),
  );
}

async function sqsConsumerPhase(services: Services, options: BenchOptions, roundNumber: number): Promise<PhaseResult> {
  log(options, `sqs-consumer: ${options.sqsConsumerInstances} instances, one insert and one delete per message`);
  return await measureChild(
    services,
    { phase: "sqs-consumer", n: options.n, round: roundNumber },
    options,
    (s) => runSqsConsumer(services.sqsEndpoint, s.queueUrl, s.databaseUrl, options.n, options.sqsConsumerInstances),
  );
}

/** Stage a queue, drain it with a consumer of ours that prints `{"done": N}`, and measure it. */
async function measureChild(
  { emulator, postgres, sqs, postmaster }: Services,
  phase: { phase: Phase; n: number; round: number },
  options: BenchOptions,
  drain: (s: Stage) => Promise<ChildRun>,
): Promise<PhaseResult> {
  const s = await stage(emulator, sqs, postgres, phase.phase, phase.n, options.corpus);
  const before = await markCpu(emulator.pid, postmaster);
  const run = await drain(s);
  const cpu = cpuBetween(before, await markCpu(emulator.pid, postmaster), "child");
  const done = run.code === 0 ? (JSON.parse(run.stdout) as { done: number }).done : 0;
  const result = childResult(phase, run, done, await queueDepth(sqs, s.queueUrl), cpu);
  await s.drop();
  return result;
}

/** A child's phase as the report gives it: ok or failed by its exit code, its rate from `done`. */
function childResult<P extends { phase: Phase; n: number; round: number }>(
  phase: P,
  run: ChildRun,
  done: number,
  leftInQueue: number,
  cpu: CpuSplit | undefined,
): PhaseResult {
  return {
    ...phase,
    status: run.code === 0 ? "ok" : "failed",
    ...(run.code === 0 ? {} : { note: `exit ${run.code}: ${run.stderr.trim().split("\n").at(-1)}` }),
    done,
    leftInQueue,
    seconds: round(run.seconds, 2),
    rate: round(done / run.seconds),
    ...(run.peakRssMb === undefined ? {} : { peakRssMb: round(run.peakRssMb, 1) }),
    ...(cpu && { cpu }),
  };
}

async function baselinePhase(services: Services, options: BenchOptions): Promise<PhaseResult> {
  log(options, `baseline: one message, one connection, one insert, one delete at a time, on ${options.baselineN}`);
  return await measureInProcess(
    services,
    { phase: "baseline", n: options.baselineN, round: 1 },
    options,
    (s) => runBaseline(services.emulator.endpoint, s.queueUrl, s.databaseUrl, options.baselineN),
  );
}

/** Stage a queue, drain it with a client that runs in this process, and measure it. */
async function measureInProcess(
  { emulator, postgres, sqs, postmaster }: Services,
  phase: { phase: Phase; n: number; round: number },
  options: BenchOptions,
  drain: (s: Stage) => Promise<{ done: number; seconds: number }>,
): Promise<PhaseResult> {
  const s = await stage(emulator, sqs, postgres, phase.phase, phase.n, options.corpus);
  const before = await markCpu(emulator.pid, postmaster);
  const { done, seconds } = await drain(s);
  const cpu = cpuBetween(before, await markCpu(emulator.pid, postmaster), "own");
  const leftInQueue = await queueDepth(sqs, s.queueUrl);
  await s.drop();
  return {
    ...phase,
    status: "ok",
    done,
    leftInQueue,
    seconds: round(seconds, 2),
    rate: round(done / seconds),
    ...(cpu && { cpu }),
  };
}

async function toolPhase(
  services: Services,
  options: BenchOptions,
  strategy: string,
  toolDir: string,
  round: number,
): Promise<PhaseResult> {
  const { emulator, postgres, sqs } = services;
  const s = await stage(emulator, sqs, postgres, strategy, options.n, options.corpus);
  const shown = options.toolDirs.length > 1 ? toolDir : undefined;
  log(
    options,
    `tool: ${services.entryFiles.get(toolDir)} --drain --strategy ${strategy} on ${options.n}${
      shown ? ` from ${shown}` : ""
    }`,
  );
  const phase = { phase: "tool" as const, strategy, n: options.n, round, ...(shown && { toolDir: shown }) };
  const result = await measureTool(services, s, phase, toolDir, options);
  await s.drop();
  return result;
}

async function largePhase(services: Services, options: BenchOptions): Promise<PhaseResult> {
  const { emulator, postgres, sqs } = services;
  const s = await stage(emulator, sqs, postgres, "large", options.largeN, options.corpus, LARGE_BODY_BYTES);
  log(
    options,
    `large: ${
      services.entryFiles.get(options.toolDirs[0]!)
    } --drain --strategy hmac on ${options.largeN} bodies of ${LARGE_BODY_BYTES} bytes`,
  );
  const phase = { phase: "large" as const, strategy: "hmac", n: options.largeN, round: 1 };
  const result = await measureTool(services, s, phase, options.toolDirs[0]!, options);
  await s.drop();
  return result;
}

/** Run the tool on a staged queue: its time, rows, what it left, its peak memory and the CPU split. */
async function measureTool(
  { emulator, sqs, sqsEndpoint, entryFiles, postmaster }: Services,
  s: Stage,
  phase: { phase: Phase; strategy: string; n: number; round: number; toolDir?: string },
  toolDir: string,
  options: BenchOptions,
): Promise<PhaseResult> {
  const before = await markCpu(emulator.pid, postmaster);
  const run = await runTool(
    sqsEndpoint,
    s.queueUrl,
    s.databaseUrl,
    phase.strategy,
    phase.n,
    options.toolArgs,
    toolDir,
    entryFiles.get(toolDir)!,
  );
  const cpu = cpuBetween(before, await markCpu(emulator.pid, postmaster), "child");
  if (run.code !== 0 && /not available/i.test(run.stderr)) {
    return {
      ...phase,
      seconds: round(run.seconds, 2),
      status: "skipped",
      note: run.stderr.trim().split("\n")[0]!,
      done: 0,
      leftInQueue: phase.n,
      rate: 0,
    };
  }
  return childResult(phase, run, await countRows(s.databaseUrl), await queueDepth(sqs, s.queueUrl), cpu);
}

/** The report as a Markdown table. */
export function formatTable(report: BenchReport): string {
  const lines = [
    `machine: ${report.machine.nproc} cores (${report.machine.cpu}), node ${report.machine.node}; corpus: ${report.options.corpus}` +
    (report.options.latencyMs > 0 ? `; SQS round trip +${report.options.latencyMs} ms` : "") +
    (report.options.entry === "bundle" ? "; the tool runs as the single file" : ""),
    "",
    "| round | phase | strategy | messages | done | left | seconds | msg/s | tool/ceiling | CPU/msg ÷ ceiling's | tool/sqs-consumer | tool/baseline | peak RSS MB | CPU s: consumer / emulator / postgres |",
    "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const r of report.results) {
    const cells = [
      r.round,
      r.phase,
      (r.strategy ?? "") + (r.toolDir ? ` (${r.toolDir})` : ""),
      r.n,
      r.done,
      r.leftInQueue,
      r.seconds,
      r.status === "ok" ? r.rate : r.status,
      r.toCeiling ?? "",
      r.cpuToCeiling ?? "",
      r.toSqsConsumer ?? "",
      r.toBaseline ?? "",
      r.peakRssMb ?? "",
      r.cpu ? `${r.cpu.consumer} / ${r.cpu.emulator} / ${r.cpu.postgres}` : "",
    ];
    lines.push(`| ${cells.join(" | ")} |`);
    if (r.note) lines.push(`|  |  | ${r.note.replace(/\|/g, "/")} |`);
  }
  if (report.medians.length > 0) {
    lines.push(
      "",
      "| checkout | strategy | rounds | median tool/ceiling | median CPU/msg ÷ ceiling's | median tool/sqs-consumer |",
    );
    lines.push("| --- | --- | ---: | ---: | ---: | ---: |");
    for (const m of report.medians) {
      const cells = [
        m.toolDir ?? "",
        m.strategy,
        m.rounds,
        m.toCeiling ?? "",
        m.cpuToCeiling ?? "",
        m.toSqsConsumer ?? "",
      ];
      lines.push(`| ${cells.join(" | ")} |`);
    }
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
