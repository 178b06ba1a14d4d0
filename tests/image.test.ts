/**
 * The Dockerfile, built and run: podman builds it (no registry: the base image is made
 * locally by scripts/node-base-image.sh and the build never pulls), then the image runs
 * against this run's Postgres and SQS emulator over the host's network, as uid 1000 on a
 * read-only root filesystem.
 *
 * In CI (CI is set, as .ci/run sets it) a missing podman fails this file; elsewhere it skips.
 */
import { execFile, execFileSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parse, stringify } from "yaml";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ensureSchema } from "../mod.ts";
import { freePort } from "../scripts/embedded.ts";
import { INVALID_BODIES, sampleBodies, sendBodies } from "../scripts/produce.ts";
import {
  countRows,
  createFixture,
  emptyTempDir,
  type Fixture,
  queueDepth,
  ROOT,
  runCommand,
  waitFor,
} from "./helpers.ts";

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

/** Wait until the tool's /healthz answers on the host's loopback. */
async function waitForHealthz(port: number): Promise<void> {
  await waitFor(
    "/healthz from the host",
    async () => {
      try {
        return (await fetch(`http://127.0.0.1:${port}/healthz`)).ok;
      } catch {
        return false;
      }
    },
    30_000,
    250,
  );
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

  afterEach(async () => {
    await f?.close();
    f = undefined;
  });

  afterAll(async () => {
    for (const name of containers) await podmanStatus(["rm", "--force", "--time", "0", name]);
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
    await waitForHealthz(port);
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

  it("plays the Kubernetes Deployment: its probes, its security context and its ConfigMap's env", async () => {
    f = await createFixture();
    const fx = f;
    await ensureSchema(fx.pool);
    const port = await freePort();
    const deployment = parse(await readFile(join(ROOT, "deploy", "kubernetes", "deployment.yaml"), "utf8"));
    const pod = deployment.spec.template.spec;
    const [container] = pod.containers;
    container.image = IMAGE;
    // podman 4.3 (Debian bookworm) refuses port mappings on the host network the test
    // services need, so the named port becomes its number; and it cannot read a kube
    // Secret (containers/podman#17071), so the Secret's keys travel in the ConfigMap here.
    expect(container.ports).toEqual([{ name: "metrics", containerPort: 9464 }]);
    delete container.ports;
    for (const probe of ["livenessProbe", "readinessProbe", "startupProbe"]) {
      expect(container[probe].httpGet.port).toBe("metrics");
      container[probe].httpGet.port = port;
    }
    container.envFrom = container.envFrom.filter((source: Record<string, unknown>) => !("secretRef" in source));
    const configMap = {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: container.envFrom[0].configMapRef.name },
      data: { ...fx.env, MASK_STRATEGY: "hmac", METRICS_PORT: String(port) },
    };
    const file = join(await emptyTempDir(), "play.yaml");
    await writeFile(file, stringify(deployment) + "---\n" + stringify(configMap));
    await podman(["kube", "play", "--network", "host", file]);
    try {
      const name = `${deployment.metadata.name}-pod-0-${container.name}`;
      await waitForHealthz(port);
      expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);
      const inspect = JSON.parse((await podman(["inspect", name])).stdout)[0];
      expect(inspect.Config.User).toBe("1000:1000");
      expect(inspect.HostConfig.ReadonlyRootfs).toBe(true);
      // podman turns the liveness probe into a healthcheck; it names the path the tool serves.
      expect(inspect.Config.Healthcheck.Test.join(" ")).toContain(`http://localhost:${port}/healthz`);

      await sendBodies(fx.sqs, fx.queueUrl, sampleBodies(40, 0, 24));
      await waitFor("the rows", async () => (await countRows(fx.pool)) === 40, 30_000);
    } finally {
      await podman(["kube", "down", file]);
    }
    expect(await queueDepth(fx.sqs, fx.queueUrl)).toBe(0);
  });
});
