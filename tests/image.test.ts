/**
 * The Dockerfile, built and run: podman builds it (no registry: the base image is made
 * locally by scripts/node-base-image.sh and the build never pulls), then the image runs
 * against this run's Postgres and SQS emulator over the host's network, as uid 1000 on a
 * read-only root filesystem.
 *
 * In CI (CI is set, as .ci/run sets it) a missing podman fails this file; elsewhere it skips.
 */
import { execFile, execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureSchema } from "../mod.ts";
import { freePort } from "../scripts/embedded.ts";
import { INVALID_BODIES, sampleBodies, sendBodies } from "../scripts/produce.ts";
import { countRows, createFixture, type Fixture, queueDepth, ROOT, runCommand, waitFor } from "./helpers.ts";

const IMAGE = "localhost/sqs-login-masker:test";

function hasPodman(): boolean {
  try {
    execFileSync("podman", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

const podmanHere = hasPodman();
if (!podmanHere && process.env.CI) {
  throw new Error("podman is not installed: .ci/run installs it (apt-get install -y podman mmdebstrap runc)");
}

/** Run podman to the end; reject with its stderr when it fails. */
function podman(args: readonly string[], timeoutMs = 60_000): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile("podman", args, { cwd: ROOT, timeout: timeoutMs, maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`podman ${args[0]} failed: ${stderr.trim().split("\n").slice(-5).join("\n")}`));
      else resolve({ stdout, stderr });
    });
  });
}

/** podman's exit code without throwing. */
function podmanStatus(args: readonly string[]): Promise<number> {
  return new Promise((resolve) => {
    execFile("podman", args, { cwd: ROOT, timeout: 60_000 }, (error) => {
      resolve(error ? (typeof error.code === "number" ? error.code : 1) : 0);
    });
  });
}

/** The environment a container gets: the fixture's queues, database and key, nothing of the host's. */
function envFlags(env: Record<string, string>): string[] {
  return Object.entries(env).flatMap(([name, value]) => ["--env", `${name}=${value}`]);
}

/** What every run shares: host network (the test's services are on loopback), read-only root. */
const RUN_FLAGS = ["--network", "host", "--read-only", "--health-interval", "disable"];

describe.skipIf(!podmanHere)("the image", { timeout: 120_000 }, () => {
  let f: Fixture | undefined;
  const containers: string[] = [];

  beforeAll(async () => {
    // Both steps are no-ops when nothing changed: the base image is kept, the build is cached.
    await new Promise<void>((resolve, reject) => {
      execFile("bash", ["scripts/node-base-image.sh"], { cwd: ROOT, timeout: 600_000 }, (error, _out, stderr) => {
        if (error) reject(new Error(`making the base image failed: ${stderr.trim().split("\n").slice(-5).join("\n")}`));
        else resolve();
      });
    });
    const ca = process.env.NODE_EXTRA_CA_CERTS;
    await podman([
      "build",
      "--network",
      "host",
      "--pull=never",
      "--format",
      "docker",
      ...(ca ? ["--secret", `id=npm_ca,src=${ca}`] : []),
      "-t",
      IMAGE,
      ".",
    ], 600_000);
  }, 900_000);

  afterAll(async () => {
    for (const name of containers) await podmanStatus(["rm", "--force", "--time", "0", name]);
    await f?.close();
  });

  it("holds the operator's commands: recover --help works inside it", async () => {
    const { stdout } = await podman(["run", "--rm", ...RUN_FLAGS, IMAGE, "recover", "--help"]);
    expect(stdout).toMatch(/^Usage: sqs-login-masker recover /m);
  });

  it("drains a queue into Postgres and dead-letters what is invalid", async () => {
    f = await createFixture();
    const fx = f;
    await ensureSchema(fx.pool);
    const bodies = sampleBodies(120, 0.1, 22);
    const invalid = bodies.filter((b) => INVALID_BODIES.some((i) => i.body === b)).length;
    await sendBodies(fx.sqs, fx.queueUrl, bodies);
    const run = await runCommand("podman", ["run", "--rm", ...RUN_FLAGS, ...envFlags(fx.env), IMAGE, "--drain"], {});
    expect(run.code, run.stderr).toBe(0);
    expect(await countRows(fx.pool)).toBe(120 - invalid);
    expect(await queueDepth(fx.sqs, fx.dlqUrl)).toBe(invalid);
    await f.close();
    f = undefined;
  });

  it("runs as uid 1000 on a read-only root, answers its HEALTHCHECK, and stops cleanly on SIGTERM", async () => {
    f = await createFixture();
    const fx = f;
    await ensureSchema(fx.pool);
    const port = await freePort();
    const name = `login-masker-test-${port}`;
    containers.push(name);
    await podman([
      "run",
      "--detach",
      "--name",
      name,
      ...RUN_FLAGS,
      ...envFlags({ ...fx.env, METRICS_PORT: String(port) }),
      IMAGE,
    ]);
    await waitFor("/healthz from the host", async () => {
      try {
        return (await fetch(`http://127.0.0.1:${port}/healthz`)).ok;
      } catch {
        return false;
      }
    }, 30_000, 250);
    // The image's own HEALTHCHECK command, run inside the container as Docker would.
    expect(await podmanStatus(["healthcheck", "run", name])).toBe(0);

    const inspect = JSON.parse((await podman(["inspect", name])).stdout)[0];
    expect(inspect.HostConfig.ReadonlyRootfs).toBe(true);
    expect((await podman(["exec", name, "id", "-u"])).stdout.trim()).toBe("1000");
    // Neither the app nor the root filesystem is writable by it.
    expect(await podmanStatus(["exec", name, "sh", "-c", "touch /app/x"])).not.toBe(0);
    expect(await podmanStatus(["exec", name, "sh", "-c", "touch /x"])).not.toBe(0);

    await sendBodies(fx.sqs, fx.queueUrl, sampleBodies(50, 0, 23));
    await waitFor("the rows", async () => (await countRows(fx.pool)) === 50, 30_000);

    // podman stop sends the image's stop signal (SIGTERM) and waits.
    await podman(["stop", "--time", "30", name]);
    const stopped = JSON.parse((await podman(["inspect", name])).stdout)[0];
    expect(stopped.State.ExitCode).toBe(0);
    const { stdout, stderr } = await podman(["logs", name]);
    expect(stdout + stderr).toMatch(/stopping: finishing what is in flight/);
    expect(await queueDepth(fx.sqs, fx.queueUrl)).toBe(0);
  });
});
