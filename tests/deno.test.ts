/**
 * The same tool under Deno: `deno run` with the permissions it names (and one line without
 * them) and `deno task`, beside an npm install and alone (a Deno-only install of a fresh
 * copy), with the same flags and real drains (hmac, and ipcrypt-pfx with its recovery
 * script), and `check`.
 */
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureSchema, loadStrategy } from "../mod.ts";
import { INVALID_BODIES, sampleBodies, sampleLogin, seededRandom, sendBodies } from "../scripts/produce.ts";
import { freePort } from "../scripts/embedded.ts";
import { canonicalIp } from "../src/ip.ts";
import { SUBCOMMANDS } from "../src/commands/registry.ts";
import { DENO_PERMISSIONS } from "../src/runtime.ts";
import {
  copyProject,
  countRows,
  createFixture,
  denoBinary,
  emptyTempDir,
  type Fixture,
  queueDepth,
  readRows,
  receiveAll,
  ROOT,
  runCommand,
  runDeno,
  runDenoTask,
  type RunResult,
  TEST_HMAC_KEY,
  waitFor,
} from "./helpers.ts";

const OTHER_PFX_KEY = "2b7e151628aed2a6abf7158809cf4f3ca9f5ba40db214c3798f2e1c23456789a";

describe("deno run with the permissions the tool names", () => {
  it("without them: one line naming what is missing and how to grant it, exit 2, no stack trace", async () => {
    for (const granted of [[], ["--allow-env"]]) {
      const run = await runCommand(denoBinary(), ["run", ...granted, "mod.ts", "--help"], {
        DENO_NO_UPDATE_CHECK: "1",
      });
      const missing = DENO_PERMISSIONS.filter((flag) => !granted.includes(flag)).join(" ");
      expect(run.stderr).toBe(
        `error: Deno has not granted ${missing}, which the tool needs: run a task of deno.json (deno task consume …), ` +
          `or deno run ${DENO_PERMISSIONS.join(" ")} mod.ts …\n`,
      );
      expect(run.code).toBe(2);
      expect(run.stdout).toBe("");
    }
  });

  it("every task names its permissions, never -A: the tool's, and the demo's beside", async () => {
    const { tasks } = JSON.parse(await readFile(join(ROOT, "deno.json"), "utf8")) as { tasks: Record<string, string> };
    const tool = `deno run ${DENO_PERMISSIONS.join(" ")} mod.ts`;
    for (const [name, command] of Object.entries(tasks)) {
      expect(command, name).not.toMatch(/ -A\b|--allow-all/);
      if (name !== "start") expect(command.startsWith(tool), name).toBe(true);
    }
    expect(tasks.start).toBe(
      "deno run --allow-net --allow-env --allow-read --allow-sys=hostname,osRelease,networkInterfaces --allow-run scripts/demo.ts",
    );
    for (const subcommand of Object.keys(SUBCOMMANDS)) expect(tasks[subcommand]).toBe(`${tool} ${subcommand}`);
  });

  it("prints help", async () => {
    const { code, stdout } = await runDeno(["--help"], {});
    expect(code).toBe(0);
    expect(stdout).toContain("--strategy NAME|PATH");
  });

  it("exits 2 with one line for a bad flag", async () => {
    const { code, stderr } = await runDeno(["--concurrency", "0"], {});
    expect(code).toBe(2);
    expect(stderr).toBe('error: --concurrency must be a whole number from 1 to 64, got "0"\n');
  });

  it("drains a mixed batch into Postgres and the DLQ", async () => {
    const f = await createFixture();
    try {
      const valid = await sendMixedBatch(f);
      const run = await runDeno(["--drain", "--strategy", "hmac"], f.env);
      await expectMixedBatchLoaded(f, valid, run);
    } finally {
      await f.close();
    }
  });

  it("serves /metrics with the tool's series and prom-client's process metrics", async () => {
    const f = await createFixture();
    await ensureSchema(f.pool);
    const port = await freePort();
    const run = runDeno(["--strategy", "hmac", "--metrics-port", String(port)], f.env);
    try {
      const valid = (await sendMixedBatch(f)).length;
      await waitFor("every row", async () => (await countRows(f.pool)) === valid, 30_000);
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(text).toMatch(new RegExp(`^login_masker_rows_loaded_total ${valid}$`, "m"));
      expect(text).toMatch(/^process_cpu_seconds_total \d/m);
      expect(await (await fetch(`http://127.0.0.1:${port}/healthz`)).text()).toBe("ok\n");
    } finally {
      run.child.kill("SIGTERM");
      const result = await run;
      expect(result.code, result.stderr.slice(-1500)).toBe(0);
      await f.close();
    }
  });

  it("drains with --strategy ipcrypt-pfx into the draft's vectors, and decrypts them back", async () => {
    // draft-denis-ipcrypt, appendix "Test Vectors", ipcrypt-pfx "Basic Test Vectors".
    const key = "0123456789abcdeffedcba98765432101032547698badcfeefcdab8967452301";
    const vectors = [
      ["0.0.0.0", "151.82.155.134"],
      ["255.255.255.255", "94.185.169.89"],
      ["192.0.2.1", "100.115.72.131"],
      ["2001:db8::1", "c180:5dd4:2587:3524:30ab:fa65:6ab6:f88"],
      ["::FFFF:192.0.2.1", "100.115.72.131"],
    ];
    const f = await createFixture();
    try {
      const random = seededRandom(31);
      const logins = vectors.map(([ip], i) => ({ ...sampleLogin(random), user_id: `deno-pfx-${i}`, ip }));
      await sendBodies(f.sqs, f.queueUrl, logins.map((login) => JSON.stringify(login)));
      const run = await runDeno(["--drain", "--strategy", "ipcrypt-pfx"], { ...f.env, MASK_IPCRYPT_KEY: key });
      expect(run.stderr).not.toMatch(/^error/m);
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/^loaded=5 duplicates=0 dead_lettered=0/);
      const rows = await readRows(f.pool);
      expect(rows.map((r) => r.masked_ip)).toEqual(vectors.map(([, encrypted]) => encrypted));

      const decrypt = (key: string) =>
        runDeno(["decrypt", "--database-url", f.databaseUrl, "--mode", "pfx", ...rows.map((r) => r.masked_ip)], {
          MASK_IPCRYPT_KEY: key,
        }, "scripts/ipcrypt.ts");
      const right = await decrypt(key);
      expect(right.stderr).toBe("");
      expect(right.code).toBe(0);
      expect(right.stdout).toBe(vectors.map(([ip]) => `${canonicalIp(ip!)}\n`).join(""));

      const wrong = await decrypt(OTHER_PFX_KEY);
      expect(wrong.stdout).toBe("");
      expect(wrong.stderr).toMatch(
        /^error: MASK_IPCRYPT_KEY is not the key public\.user_logins was masked with .*: nothing decrypted\n$/,
      );
      expect(wrong.stderr).not.toMatch(/\d+\.\d+\.\d+\.\d+/);
      expect(wrong.code).toBe(2);
    } finally {
      await f.close();
    }
  });

  it("loads hmac under key A twice, and refuses key B, sha256 and ipcrypt with one line, loading nothing", async () => {
    const f = await createFixture();
    try {
      const drain = (strategy: string, env: Record<string, string> = {}) =>
        runDeno(["--drain", "--strategy", strategy], { ...f.env, ...env });
      await sendBodies(f.sqs, f.queueUrl, sampleBodies(5, 0, 1));
      expect((await drain("hmac")).stdout).toMatch(/^loaded=5 /);
      await sendBodies(f.sqs, f.queueUrl, sampleBodies(5, 0, 2));
      expect((await drain("hmac")).stdout).toMatch(/^loaded=5 /);
      await sendBodies(f.sqs, f.queueUrl, sampleBodies(5, 0, 3));
      for (
        const [strategy, env, mine] of [
          ["hmac", { MASK_HMAC_KEY: "o".repeat(32) + "-another-test-key" }, "hmac \\(fingerprint"],
          ["sha256", {}, "sha256 \\(no key\\)"],
          ["ipcrypt", { MASK_IPCRYPT_KEY: "2b7e151628aed2a6abf7158809cf4f3c" }, "ipcrypt \\(fingerprint ip:"],
        ] as const
      ) {
        const refused = await drain(strategy, env);
        expect(refused.stdout).toBe("");
        expect(refused.stderr).toMatch(
          new RegExp(
            `^error: public\\.user_logins is masked by hmac \\(fingerprint [0-9a-f]{32}\\); this run's mask is ${mine}`,
          ),
        );
        expect(refused.stderr.trim().split("\n")).toHaveLength(1);
        expect(refused.code).toBe(2);
      }
      expect(await countRows(f.pool)).toBe(10);
      expect(await queueDepth(f.sqs, f.queueUrl)).toBe(5);
    } finally {
      await f.close();
    }
  });
});

/** 40 valid messages and 4 invalid ones; returns the valid bodies. */
async function sendMixedBatch(f: Fixture): Promise<string[]> {
  const valid = sampleBodies(40, 0, 21);
  await sendBodies(f.sqs, f.queueUrl, [...valid, ...INVALID_BODIES.slice(0, 4).map((i) => i.body)]);
  return valid;
}

async function expectMixedBatchLoaded(f: Fixture, valid: readonly string[], run: RunResult): Promise<void> {
  expect(run.stderr).not.toMatch(/^error/m);
  expect(run.code).toBe(0);
  expect(run.stdout).toMatch(/^loaded=40 duplicates=0 dead_lettered=4/m);
  expect(await countRows(f.pool)).toBe(40);
  const strategy = await loadStrategy("hmac", { env: { MASK_HMAC_KEY: TEST_HMAC_KEY } });
  const byUser = new Map((await readRows(f.pool)).map((r) => [r.user_id, r]));
  for (const body of valid) {
    const m = JSON.parse(body);
    expect(byUser.get(m.user_id)?.masked_ip).toBe(await strategy.mask(m.ip, "ip"));
    expect(run.stderr).not.toContain(m.ip);
    expect(run.stderr).not.toContain(m.device_id);
  }
  expect(await receiveAll(f.sqs, f.dlqUrl)).toHaveLength(4);
}

/** The tasks a user types, run in `dir` (a checkout after `npm install`, or a Deno-only one). */
function describeTasks(dir: () => string): void {
  it("help prints the tool's help", async () => {
    const run = await runDenoTask("help", [], {}, dir());
    expect(run.stderr).not.toMatch(/^error/m);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain("--strategy NAME|PATH");
  });

  it("check: ready, one line per thing checked, nothing received", async () => {
    const f = await createFixture({ maxReceiveCount: 5 });
    try {
      await sendMixedBatch(f);
      const run = await runDenoTask("check", [], f.env, dir());
      expect(run.stderr).not.toMatch(/^(error|warning):/m);
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/^ok: --database-url /m);
      expect(await queueDepth(f.sqs, f.queueUrl)).toBe(44);
    } finally {
      await f.close();
    }
  });

  it("drain loads a mixed batch, with flags given after the task name", async () => {
    const f = await createFixture();
    try {
      const valid = await sendMixedBatch(f);
      const run = await runDenoTask("drain", ["--strategy", "hmac"], f.env, dir());
      await expectMixedBatchLoaded(f, valid, run);
    } finally {
      await f.close();
    }
  });

  it("consume runs until SIGTERM, then stops cleanly: the signal reaches the tool, exit 0", async () => {
    const f = await createFixture();
    try {
      const running = runDenoTask("consume", [], f.env, dir());
      await waitFor("the consumer to start", () => running.stderrSoFar().includes("consuming"), 60_000);
      running.child.kill("SIGTERM");
      // The task's own exit, not its output's end: a tool the signal never reached would keep
      // the output open.
      await waitFor(
        "deno task to exit",
        () => running.child.exitCode !== null || running.child.signalCode !== null,
        45_000,
      );
      expect(running.child.exitCode).toBe(0);
      const run = await running;
      expect(run.stderr).toContain("stopping: finishing what is in flight");
      expect(run.stdout).toMatch(/^loaded=0 /m);
    } finally {
      await f.close();
    }
  });
}

describe("deno task, beside npm install", () => {
  describeTasks(() => ROOT);

  it("start runs the demo end to end on embedded services, exits, and leaves no temp folder", async () => {
    const tmp = await emptyTempDir();
    try {
      const run = await runDenoTask("start", [], { TMPDIR: tmp });
      expect(run.stderr).not.toMatch(/^error/m);
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/^Summary: loaded=90 duplicates=0 dead_lettered=10 left_in_queue=0/m);
      expect(await readdir(tmp)).toEqual([]);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });
});

describe("deno task, with a Deno-only install (deno install, no npm)", () => {
  let dir = "";
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "login-masker-deno-only-"));
    await copyProject(dir);
    // The system's CA store, not Deno's own: npm's registry may sit behind a proxy whose CA
    // only the system trusts (as on CI's machines).
    const install = await runCommand(denoBinary(), ["install"], {
      DENO_NO_UPDATE_CHECK: "1",
      DENO_TLS_CA_STORE: "system",
    }, dir);
    expect(install.code, install.stderr).toBe(0);
  }, 300_000);
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  describeTasks(() => dir);

  it("start says in one line that the embedded demo cannot run here, exits non-zero, leaves no temp folder", async () => {
    const tmp = await emptyTempDir();
    try {
      const run = await runDenoTask("start", [], { TMPDIR: tmp }, dir);
      expect(run.code).toBe(1);
      const errors = run.stderr.split("\n").filter((line) => /error/i.test(line));
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatch(/^error: Embedded Postgres .*install script.*Deno-only install.*run npm install/);
      expect(run.stderr).not.toMatch(/^\s+at /m);
      expect(await readdir(tmp)).toEqual([]);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });
});
