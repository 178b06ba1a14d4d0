/**
 * What an operator sees: Prometheus metrics, /healthz and /readyz (which turns 503 when
 * Postgres is cut), the per-second batch summary at info, and the live drain progress in a
 * terminal. No raw value in any of them.
 */
import { spawn } from "node:child_process";
import { afterEach, describe, expect, it } from "vitest";
import { type ConsumerStats, createLogger, ensureSchema } from "../mod.ts";
import { createMetrics } from "../src/metrics.ts";
import { createBatchSummary, formatProgress } from "../src/progress.ts";
import { freePort } from "../scripts/embedded.ts";
import { INVALID_BODIES, sampleBodies, sendBodies } from "../scripts/produce.ts";
import {
  countRows,
  createFixture,
  expectNoPii,
  type Fixture,
  queueDepth,
  rawPii,
  ROOT,
  runTool,
  waitFor,
} from "./helpers.ts";
import { startTcpProxy, type TcpProxy } from "./proxy.ts";

const STATS: ConsumerStats = {
  received: 12,
  loaded: 9,
  duplicates: 1,
  deadLettered: 2,
  leftInQueue: 0,
  released: 4,
  retries: 3,
  startedAt: 0,
};

describe("metrics text", () => {
  it("renders counters from the stats and histograms from the observer", async () => {
    const metrics = createMetrics();
    metrics.observer.onBatch({ size: 10, rows: 9, duplicates: 1, rejected: 0, ms: 40 });
    metrics.observer.onBatch({ size: 300, rows: 300, duplicates: 0, rejected: 0, ms: 700 });
    metrics.observer.onRetry("postgres");
    const text = await metrics.render(STATS, 7);
    expect(text).toMatch(/^process_cpu_seconds_total \d/m);
    for (
      const line of [
        "login_masker_messages_received_total 12",
        "login_masker_rows_loaded_total 9",
        "login_masker_duplicates_total 1",
        "login_masker_messages_dead_lettered_total 2",
        'login_masker_retries_total{service="postgres"} 1',
        'login_masker_retries_total{service="sqs"} 0',
        "login_masker_in_flight_messages 7",
        'login_masker_batch_size_bucket{le="10"} 1',
        'login_masker_batch_size_bucket{le="500"} 2',
        "login_masker_batch_size_count 2",
        'login_masker_batch_duration_seconds_bucket{le="0.05"} 1',
        'login_masker_batch_duration_seconds_bucket{le="1"} 2',
      ]
    ) expect(text.split("\n")).toContain(line);
  });

  it("summarises batches once per interval at info, and says nothing when idle", () => {
    const lines: string[] = [];
    const summary = createBatchSummary(createLogger({ level: "info", write: (l) => lines.push(l) }), 60_000);
    summary.flush();
    expect(lines).toEqual([]);
    summary.onBatch({ size: 10, rows: 9, duplicates: 1, rejected: 0, ms: 40 });
    summary.onBatch({ size: 5, rows: 4, duplicates: 0, rejected: 1, ms: 60 });
    summary.stop();
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({
      level: "info",
      msg: "batches written",
      batches: 2,
      rows: 13,
      duplicates: 1,
      rejected: 1,
      ms_avg: 50,
      ms_max: 60,
    });
  });

  it("formats the progress line", () => {
    expect(formatProgress({ loaded: 12_345, deadLettered: 3, rate: 850.4, remaining: 4_000 }))
      .toBe("loaded 12,345  dead-lettered 3  850/s  ~4,000 left");
    expect(formatProgress({ loaded: 0, deadLettered: 0, rate: 0, remaining: undefined })).toBe(
      "loaded 0  dead-lettered 0  0/s  ~? left",
    );
  });
});

let f: Fixture | undefined;
let proxy: TcpProxy | undefined;
afterEach(async () => {
  await proxy?.close();
  proxy = undefined;
  await f?.close();
  f = undefined;
});

async function get(port: number, path: string): Promise<{ status: number; text: string }> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: response.status, text: await response.text() };
}

function metricValue(text: string, name: string): number {
  const line = text.split("\n").find((l) => l.startsWith(name + " "));
  return line === undefined ? Number.NaN : Number(line.split(" ")[1]);
}

describe("the CLI with --metrics-port", () => {
  it("serves metrics, /healthz, and a /readyz that follows Postgres", async () => {
    f = await createFixture();
    const fx = f;
    await ensureSchema(fx.pool);
    proxy = await startTcpProxy(fx.databaseUrl.replace(/^postgres(ql)?:/, "tcp:"));
    const p = proxy;
    const port = await freePort();
    const bodies = sampleBodies(60, 0.1, 21);
    const invalid = bodies.filter((b) => INVALID_BODIES.some((i) => i.body === b)).length;
    await sendBodies(fx.sqs, fx.queueUrl, bodies);
    const run = runTool(["--strategy", "sha256", "--metrics-port", String(port)], {
      ...fx.env,
      DATABASE_URL: p.via(fx.databaseUrl),
    });
    try {
      await waitFor(
        "every row",
        async () => (await countRows(fx.pool)) === 60 - invalid && (await queueDepth(fx.sqs, fx.queueUrl)) === 0,
        30_000,
      );
      const metrics = await get(port, "/metrics");
      expect(metrics.status).toBe(200);
      expect(metricValue(metrics.text, "login_masker_rows_loaded_total")).toBe(60 - invalid);
      expect(metricValue(metrics.text, "login_masker_messages_dead_lettered_total")).toBe(invalid);
      expect(metricValue(metrics.text, "login_masker_messages_received_total")).toBe(60);
      expect(metricValue(metrics.text, "login_masker_batch_size_count")).toBeGreaterThan(0);
      expect(metricValue(metrics.text, "login_masker_in_flight_messages")).toBe(0);
      // prom-client's process and runtime metrics, beside the tool's own.
      expect(metricValue(metrics.text, "process_cpu_seconds_total")).toBeGreaterThan(0);
      expect(metricValue(metrics.text, "process_resident_memory_bytes")).toBeGreaterThan(0);
      expect(metrics.text).toMatch(/^nodejs_heap_size_used_bytes \d/m);
      expect(await get(port, "/healthz")).toEqual({ status: 200, text: "ok\n" });
      expect(await get(port, "/readyz")).toEqual({ status: 200, text: "ready\n" });

      await p.cut();
      const down = await waitFor(
        "/readyz to report Postgres down",
        async () => {
          const r = await get(port, "/readyz");
          return r.status === 503 ? r : undefined;
        },
        15_000,
        250,
      );
      expect(down.text).toMatch(/^postgres: /);
      expect((await get(port, "/healthz")).status).toBe(200); // alive, only not ready
      await p.restore();
      await waitFor("/readyz to recover", async () => (await get(port, "/readyz")).status === 200, 15_000, 250);
      expectNoPii(metrics.text, rawPii(bodies));
    } finally {
      run.child.kill("SIGTERM");
    }
    const result = await run;
    expect(result.code).toBe(0);
    const summaries = result.stderr.split("\n").filter((l) => l.includes('"msg":"batches written"')).map((l) =>
      JSON.parse(l)
    );
    expect(summaries.length).toBeGreaterThan(0);
    expect(summaries.reduce((sum, s) => sum + s.rows, 0)).toBe(60 - invalid);
    expect(summaries[0]).toMatchObject({ level: "info" });
    expectNoPii(result.stdout + result.stderr, rawPii(bodies));
  });
});

describe("--drain in a terminal", () => {
  it("shows live progress on one line, then the summary", async () => {
    f = await createFixture();
    const bodies = sampleBodies(300, 0.05, 22);
    await sendBodies(f.sqs, f.queueUrl, bodies);
    // `script` gives the tool a pseudo-terminal, so stderr.isTTY is true as for a person.
    const command = `${
      JSON.stringify(process.execPath)
    } --import tsx mod.ts --drain --strategy tests/fixtures/slow-strategy.ts --batch-size 10 --concurrency 1`;
    const output = await new Promise<{ code: number | null; text: string }>((resolve) => {
      const child = spawn("script", ["-qfec", command, "/dev/null"], {
        cwd: ROOT,
        env: { PATH: process.env.PATH, HOME: process.env.HOME, ...f!.env, SLOW_PERSIST_MS: "30" },
      });
      let text = "";
      child.stdout.on("data", (d) => (text += d));
      child.on("close", (code) => resolve({ code, text }));
    });
    expect(output.code).toBe(0);
    // deno-lint-ignore no-control-regex no-regex-spaces -- the terminal's escape, and the line's two-space gaps
    expect(output.text).toMatch(/\r\x1b\[2Kloaded \d[\d,]*  dead-lettered \d+  \d[\d,]*\/s  ~(\d[\d,]*|\?) left/);
    expect(output.text).toMatch(/loaded=\d+ duplicates=0 dead_lettered=\d+ /);
    expectNoPii(output.text, rawPii(bodies));
  });
});

describe("--log-format", () => {
  /** The run's output through a pseudo-terminal (`script`), as a person at a terminal sees it. */
  function inTerminal(args: string, env: Record<string, string>): Promise<{ code: number | null; text: string }> {
    return new Promise((resolve) => {
      const child = spawn("script", [
        "-qfec",
        `${JSON.stringify(process.execPath)} --import tsx mod.ts ${args}`,
        "/dev/null",
      ], {
        cwd: ROOT,
        env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
      });
      let text = "";
      child.stdout.on("data", (d) => (text += d));
      child.on("close", (code) => resolve({ code, text }));
    });
  }

  it("pretty: one readable line an event, where stderr is no terminal", async () => {
    f = await createFixture();
    const run = await runTool(["--drain", "--log-format", "pretty"], f.env);
    expect(run.code).toBe(0);
    expect(run.stderr).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: consuming \{"queue":/m);
    expect(run.stderr).not.toMatch(/^\{/m);
  });

  it("json (LOG_FORMAT): one object a line, in a terminal too", async () => {
    f = await createFixture();
    const run = await inTerminal("--drain", { ...f.env, LOG_FORMAT: "json" });
    expect(run.code).toBe(0);
    const consuming = run.text.split(/\r?\n/).find((line) => line.includes('"msg":"consuming"'));
    expect(JSON.parse(consuming!)).toMatchObject({ level: "info", msg: "consuming", strategy: "hmac" });
  });
});
