/**
 * The benchmark at a tiny N: proves `npm run bench` works end to end (its own emulator
 * process, every phase, the JSON shape), and that its corpus repeats as documented. No
 * rate is asserted: CI machines vary, and a timed assertion would fail for reasons that
 * are not bugs.
 */
import { expect, inject, it } from "vitest";
import { type BenchReport, medianRatios, type PhaseResult } from "../scripts/bench.ts";
import { createLoginStream } from "../scripts/produce.ts";
import { runTool } from "./helpers.ts";

const N = 300;
const BASELINE_N = 50;
const LARGE_N = 20;

it("runs every phase at a small N and reports each as drained, as JSON", async () => {
  // The bench starts its own emulator; Postgres is the suite's, where it makes and drops
  // databases of its own.
  const run = await runTool([
    "--n",
    String(N),
    "--baseline-n",
    String(BASELINE_N),
    "--large-n",
    String(LARGE_N),
    "--json",
  ], {
    DATABASE_URL: inject("postgresUrl"),
  }, "scripts/bench.ts");
  expect(run.stderr).not.toMatch(/^error/m);
  expect(run.code).toBe(0);
  const report = JSON.parse(run.stdout) as BenchReport;

  expect(report.machine).toEqual({ nproc: expect.any(Number), cpu: expect.any(String), node: process.version });
  expect(report.options).toMatchObject({
    n: N,
    baselineN: BASELINE_N,
    largeN: LARGE_N,
    phases: ["ceiling", "sqs-consumer", "tool", "large", "baseline"],
  });

  const byName = (phase: string, strategy?: string) =>
    report.results.find((r) => r.phase === phase && r.strategy === strategy) as PhaseResult;
  const drained = (r: PhaseResult, n: number) => {
    expect(r).toMatchObject({ status: "ok", n, done: n, leftInQueue: 0 });
    expect(r.seconds).toBeGreaterThan(0);
    expect(r.rate).toBeGreaterThan(0);
  };
  drained(byName("ceiling"), N);
  // The bare client is a child too, measured as the tool is.
  expect(byName("ceiling").peakRssMb).toBeGreaterThan(0);
  expect(byName("ceiling").cpu?.consumer).toBeGreaterThan(0.1);
  drained(byName("sqs-consumer"), N);
  drained(byName("baseline"), BASELINE_N);
  // Bodies of nearly 1 MiB: drained too, with the peak RSS the bound is judged by.
  drained(byName("large", "hmac"), LARGE_N);
  expect(byName("large", "hmac").peakRssMb).toBeGreaterThan(0);
  for (const strategy of ["hmac", "sha256", "vault", "ipcrypt", "ipcrypt-pfx"]) {
    const tool = byName("tool", strategy);
    drained(tool, N);
    expect(tool.peakRssMb).toBeGreaterThan(0);
    expect(tool.toCeiling).toBeGreaterThan(0);
    expect(tool.toSqsConsumer).toBeGreaterThan(0);
    expect(tool.toBaseline).toBeGreaterThan(0);
    // Where the cores went (Linux /proc): the tool is a child, so its CPU comes from the
    // bench's reaped children; start-up alone costs it a good fraction of a second.
    expect(tool.cpu?.consumer).toBeGreaterThan(0.1);
  }
  for (const r of report.results) {
    expect(r.cpu).toEqual({ consumer: expect.any(Number), emulator: expect.any(Number), postgres: expect.any(Number) });
    expect(Math.min(r.cpu!.consumer, r.cpu!.emulator, r.cpu!.postgres)).toBeGreaterThanOrEqual(0);
  }
}, 90_000);

it("runs the tool as the single file the image runs with --entry bundle", async () => {
  const run = await runTool(
    ["--n", "50", "--phases", "tool", "--strategies", "hmac", "--entry", "bundle", "--json"],
    { DATABASE_URL: inject("postgresUrl") },
    "scripts/bench.ts",
  );
  expect(run.code).toBe(0);
  const report = JSON.parse(run.stdout) as BenchReport;
  expect(report.options.entry).toBe("bundle");
  expect(report.results).toEqual([expect.objectContaining({ phase: "tool", status: "ok", done: 50, leftInQueue: 0 })]);
}, 90_000);

it("gives each strategy's and checkout's median ratios over its rounds", () => {
  const tool = (round: number, strategy: string, toCeiling: number, cpuToCeiling: number, toolDir?: string) =>
    ({
      phase: "tool",
      strategy,
      round,
      status: "ok",
      toCeiling,
      cpuToCeiling,
      ...(toolDir && { toolDir }),
    }) as PhaseResult;
  const results = [
    { phase: "ceiling", round: 1, status: "ok" } as PhaseResult,
    tool(1, "hmac", 0.8, 1.2, "a"),
    tool(1, "hmac", 0.7, 1.4, "b"),
    tool(2, "hmac", 0.6, 1.3, "a"),
    tool(2, "hmac", 0.9, 1.1, "b"),
    tool(3, "hmac", 0.9, 1.25, "a"),
    { ...tool(3, "hmac", 0.1, 9, "b"), status: "failed" } as PhaseResult,
  ];
  expect(medianRatios(results)).toEqual([
    { strategy: "hmac", toolDir: "a", rounds: 3, toCeiling: 0.8, cpuToCeiling: 1.25 },
    { strategy: "hmac", toolDir: "b", rounds: 2, toCeiling: 0.8, cpuToCeiling: 1.25 },
  ]);
});

it("sends a corpus that repeats as docs/benchmark.md says: the same users, devices and addresses again and again", () => {
  const logins = 20_000;
  const next = createLoginStream(1, logins / 10);
  const bodies = Array.from({ length: logins }, next);
  expect(Array.from({ length: 5 }, createLoginStream(1, logins / 10))).toEqual(bodies.slice(0, 5));
  const parsed = bodies.map((b) => JSON.parse(b) as { user_id: string; ip: string; device_id: string });
  const perUser = new Map<string, { ips: Set<string>; devices: Set<string>; logins: number }>();
  for (const { user_id, ip, device_id } of parsed) {
    const user = perUser.get(user_id) ?? { ips: new Set(), devices: new Set(), logins: 0 };
    user.ips.add(ip);
    user.devices.add(device_id);
    user.logins++;
    perUser.set(user_id, user);
  }
  const users = [...perUser.values()];
  expect(users.length).toBeLessThanOrEqual(logins / 10);
  expect(Math.max(...users.map((u) => u.ips.size))).toBeLessThanOrEqual(3);
  expect(Math.max(...users.map((u) => u.devices.size))).toBeLessThanOrEqual(2);
  const distinct = new Set(parsed.flatMap((p) => [p.ip, p.device_id])).size / (2 * logins);
  expect(distinct).toBeGreaterThan(0.05);
  expect(distinct).toBeLessThan(0.25);
  const top = users.map((u) => u.logins).sort((a, b) => b - a);
  expect(top[0]! / logins).toBeLessThan(0.03);
  expect(top.slice(0, 10).reduce((a, b) => a + b) / logins).toBeGreaterThan(0.05);
});
