/**
 * The benchmark at a tiny N: proves `npm run bench` works end to end (its own emulator
 * process, every phase, the JSON shape). No figure is asserted: CI machines vary, and a
 * timed assertion would fail for reasons that are not bugs.
 */
import { inject, expect, it } from "vitest";
import type { BenchReport, PhaseResult } from "../scripts/bench.ts";
import { runTool } from "./helpers.ts";

const N = 300;
const BASELINE_N = 50;

it("runs every phase at a small N and reports each as drained, as JSON", async () => {
  // The bench starts its own emulator; Postgres is the suite's, where it makes and drops
  // databases of its own.
  const run = await runTool(["--n", String(N), "--baseline-n", String(BASELINE_N), "--json"], {
    DATABASE_URL: inject("postgresUrl"),
  }, "scripts/bench.ts");
  expect(run.stderr).not.toMatch(/^error/m);
  expect(run.code).toBe(0);
  const report = JSON.parse(run.stdout) as BenchReport;

  expect(report.machine).toEqual({ nproc: expect.any(Number), cpu: expect.any(String), node: process.version });
  expect(report.options).toMatchObject({ n: N, baselineN: BASELINE_N, phases: ["ceiling", "tool", "baseline"] });

  const byName = (phase: string, strategy?: string) =>
    report.results.find((r) => r.phase === phase && r.strategy === strategy) as PhaseResult;
  const drained = (r: PhaseResult, n: number) => {
    expect(r).toMatchObject({ status: "ok", n, done: n, leftInQueue: 0 });
    expect(r.seconds).toBeGreaterThan(0);
    expect(r.rate).toBeGreaterThan(0);
  };
  drained(byName("ceiling"), N);
  drained(byName("baseline"), BASELINE_N);
  for (const strategy of ["hmac", "sha256", "vault", "ipcrypt", "ipcrypt-pfx"]) {
    const tool = byName("tool", strategy);
    drained(tool, N);
    expect(tool.peakRssMb).toBeGreaterThan(0);
    expect(tool.toCeiling).toBeGreaterThan(0);
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
