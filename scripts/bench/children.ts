/**
 * The tool, the bare client and sqs-consumer as child processes, the tool run the way a user
 * runs it, all timed from spawn to exit.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { emulatorEnv } from "../embedded.ts";
import { readPeakRssMb } from "./cpu.ts";
import { BENCH_HMAC_KEY, toolKeys } from "./options.ts";

export interface ChildRun {
  code: number | null;
  seconds: number;
  stdout: string;
  stderr: string;
  peakRssMb: number | undefined;
}

/** Run the tool (`node mod.ts`, or the single file) with `--drain` and time it from spawn to exit. */
export async function runTool(
  endpoint: string,
  queueUrl: string,
  databaseUrl: string,
  strategy: string,
  messages: number,
  extra: string[],
  toolDir: string,
  /** `mod.ts` (Node strips the types; tsx would add ~0.9 s of start-up), or a bundle's path. */
  entryFile: string,
): Promise<ChildRun> {
  return await runMeasured([entryFile, "--drain", "--strategy", strategy, "--log-level", "warn", ...extra], {
    cwd: toolDir,
    env: { ...emulatorEnv(endpoint), QUEUE_URL: queueUrl, DATABASE_URL: databaseUrl, ...toolKeys(strategy) },
    messages,
  });
}

/** Run the bare client (`ceiling.ts`) the same way: its own process, spawn to exit. */
export async function runCeiling(
  endpoint: string,
  queueUrl: string,
  messages: number,
  concurrency: number,
): Promise<ChildRun> {
  const script = fileURLToPath(new URL("./ceiling.ts", import.meta.url));
  return await runMeasured([script, queueUrl, String(messages), String(concurrency)], {
    cwd: process.cwd(),
    env: emulatorEnv(endpoint),
    messages,
  });
}

/** Run sqs-consumer (`sqs-consumer.ts`) the same way: its own process, spawn to exit. */
export async function runSqsConsumer(
  endpoint: string,
  queueUrl: string,
  databaseUrl: string,
  messages: number,
  instances: number,
): Promise<ChildRun> {
  const script = fileURLToPath(new URL("./sqs-consumer.ts", import.meta.url));
  return await runMeasured([script, queueUrl, String(messages), String(instances), databaseUrl], {
    cwd: process.cwd(),
    env: { ...emulatorEnv(endpoint), MASK_HMAC_KEY: BENCH_HMAC_KEY },
    messages,
  });
}

/**
 * Spawn `node <args>` with `BENCH_NODE_OPTIONS` (a profiler, say) and time it from spawn to
 * exit. VmHWM only grows, so polling it every 50 ms misses at most the growth of the last
 * 50 ms.
 */
async function runMeasured(
  args: string[],
  { cwd, env, messages }: { cwd: string; env: Record<string, string>; messages: number },
): Promise<ChildRun> {
  const started = performance.now();
  const child: ChildProcess = spawn(process.execPath, [
    ...(process.env.BENCH_NODE_OPTIONS?.split(" ").filter(Boolean) ?? []),
    ...args,
  ], {
    cwd,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
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
  // A child that never stops must fail the bench, not hang it: allow 30 s plus 100 msg/s.
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
