/**
 * The demo (`npm start`) beyond its default run: `--strategy vault` recovers an original
 * through the recover command, `--keep` leaves the services up until Ctrl-C; and the
 * README's by-hand emulator (`scripts/fauxqs-init.json`) starts without a warning.
 */
import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { sql } from "slonik";
import { startFauxqs } from "fauxqs";
import { describe, expect, it } from "vitest";
import { canonicalIp, createDatabasePool } from "../mod.ts";
import { sampleBodies } from "../scripts/produce.ts";
import { emulatorClient, reachableQueueUrl } from "../scripts/embedded.ts";
import { readQueueDepth } from "../src/sqs.ts";
import { createFixture, emptyTempDir, ROOT, runTool, waitFor } from "./helpers.ts";

/** The demo's sample: 100 logins, 10 % malformed, seed 7 (scripts/demo.ts). */
const DEMO_BODIES = sampleBodies(100, 0.1, 7);

const demo = (args: readonly string[], tmp: string) => runTool(args, { TMPDIR: tmp }, "scripts/demo.ts");

/** What a run left in its TMPDIR, but tsx's own cache. */
const leftBehind = async (tmp: string) => (await readdir(tmp)).filter((name) => !name.startsWith("tsx-"));

describe("the demo", { timeout: 240_000 }, () => {
  it("--strategy vault: the first row's ip comes back through recover, the one its message carried", async () => {
    const tmp = await emptyTempDir();
    try {
      const run = await demo(["--strategy", "vault"], tmp);
      expect(run.stderr).not.toMatch(/^error/m);
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/^Summary: loaded=90 duplicates=0 dead_lettered=10 left_in_queue=0/m);
      const user = /The ip of user (\S+):/.exec(run.stdout)?.[1];
      const [, token, recovered] = /^ip\t(vlt1:\S+)\t(\S+)$/m.exec(run.stdout) ?? [];
      expect(token).toBeDefined();
      expect(run.stdout).toContain(`sqs-login-masker recover --reason "demo" --ticket DEMO-1 ${token}`);
      const sent = DEMO_BODIES.map((body) => {
        try {
          return JSON.parse(body);
        } catch {
          return undefined;
        }
      }).find((message) => message?.user_id === user);
      expect(recovered).toBe(canonicalIp(sent.ip));
      expect(await leftBehind(tmp)).toEqual([]);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });

  it("--keep: says how to reach the services, which answer, until Ctrl-C stops them and removes everything", async () => {
    const tmp = await emptyTempDir();
    const run = demo(["--keep", "--strategy", "ipcrypt-pfx"], tmp);
    try {
      const out = () => run.stdoutSoFar();
      const url = await waitFor("the psql line", () => /^ {2}psql (\S+)$/m.exec(out())?.[1], 180_000);
      const endpoint = /AWS_ENDPOINT_URL=(\S+)/.exec(out())![1]!;
      const queueUrl = /QUEUE_URL=(\S+)/.exec(out())![1]!;
      const pool = await createDatabasePool(url);
      try {
        expect(await pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM user_logins`)).toBe(90);
      } finally {
        await pool.end();
      }
      const sqs = emulatorClient(endpoint);
      try {
        expect(await readQueueDepth(sqs, queueUrl)).toEqual({ visible: 0, inFlight: 0, delayed: 0 });
      } finally {
        sqs.destroy();
      }
      expect(out()).toMatch(/MASK_IPCRYPT_KEY=[0-9a-f]{64} MASK_HMAC_KEY=[0-9a-f]{64}/);
      run.child.kill("SIGINT");
      const result = await run;
      expect(result.code).toBe(0);
      expect(result.stdout).toMatch(/Stopping\.\n\nDone in [\d.]+ s\. Everything was temporary and is gone now\.\n$/);
      expect(await leftBehind(tmp)).toEqual([]);
    } finally {
      run.child.kill("SIGKILL");
      await run;
      await rm(tmp, { recursive: true, force: true });
    }
  });

  it("an unknown strategy: one line, exit 2, before anything starts", async () => {
    const tmp = await emptyTempDir();
    try {
      const run = await demo(["--strategy", "md5"], tmp);
      expect(run.stderr).toMatch(/^error: Unknown strategy "md5": use one of .*\n$/);
      expect(run.code).toBe(2);
      expect(run.stdout).toBe("");
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });
});

describe("scripts/fauxqs-init.json, the README's emulator by hand", () => {
  it("gives login-queue a RedrivePolicy to login-queue-dlq: check is ready, and says no warning", async () => {
    const server = await startFauxqs({
      port: 0,
      logger: false,
      host: "localhost",
      init: join(ROOT, "scripts", "fauxqs-init.json"),
    });
    const f = await createFixture();
    try {
      const endpoint = server.address.replace("localhost", "127.0.0.1");
      const url = (name: string) => reachableQueueUrl(`http://localhost/000000000000/${name}`, endpoint);
      const run = await runTool(["check"], {
        ...f.env,
        AWS_ENDPOINT_URL: endpoint,
        QUEUE_URL: url("login-queue"),
        DLQ_URL: url("login-queue-dlq"),
      });
      expect(run.stderr).toBe("");
      expect(run.code).toBe(0);
      expect(run.stdout).toContain(
        `ok: --queue-url ${url("login-queue")}: reachable, VisibilityTimeout 30 s, RedrivePolicy after 5 receives`,
      );
    } finally {
      await f.close();
      await server.stop();
    }
  });
});
