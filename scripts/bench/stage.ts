/**
 * The bench's services and staging: the emulator in its own process, and a fresh queue
 * and database holding the corpus for each phase.
 *
 * @module
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { DeleteQueueCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { createPool, sql } from "slonik";
import { readQueueDepth } from "../../src/sqs.ts";
import { attachEmulator, type PostgresServer, type SqsEmulator } from "../embedded.ts";
import { createLoginStream, sampleBodies, sendBodies } from "../produce.ts";
import { type Corpus, LOGINS_PER_USER, ROOT } from "./options.ts";

/**
 * fauxqs in its own process, so its CPU is not the bench's. It needs Node >= 22.5: spawn
 * with this process's Node, not whatever `node` is first on PATH.
 */
export async function startEmulatorProcess(): Promise<SqsEmulator & { pid: number }> {
  const script = `
    import { startFauxqs } from "fauxqs";
    const server = await startFauxqs({ port: 0, logger: false, host: "localhost", defaultRegion: "us-east-1" });
    process.stdout.write(server.address + "\\n");
    process.on("SIGTERM", () => server.stop().then(() => process.exit(0)));`;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const address = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d) => {
      out += d;
      if (out.includes("\n")) resolve(out.trim());
    });
    child.once("exit", (code) => reject(new Error(`SQS emulator exited with code ${code} before it listened`)));
  });
  const endpoint = address.replace("localhost", "127.0.0.1");
  const emulator = attachEmulator(endpoint, "us-east-1", async () => {
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    await exited;
  });
  return { ...emulator, pid: child.pid! };
}

export interface Stage {
  queueUrl: string;
  databaseUrl: string;
  drop(): Promise<void>;
}

/** The corpus's bodies, a slice at a time: the same for every phase of a run. */
function createCorpus(corpus: Corpus, count: number): (size: number) => string[] {
  if (corpus === "unique") {
    let made = 0;
    return (size) => sampleBodies(size, 0, (made += size) - size + 1);
  }
  const next = createLoginStream(1, Math.max(1, Math.round(count / LOGINS_PER_USER)));
  return (size) => Array.from({ length: size }, next);
}

/**
 * A fresh queue holding `count` messages and a fresh database, for one phase; with
 * `bodyBytes`, each body is padded to that size.
 */
export async function stage(
  emulator: SqsEmulator,
  sqs: SQSClient,
  postgres: PostgresServer,
  name: string,
  count: number,
  corpus: Corpus,
  bodyBytes?: number,
): Promise<Stage> {
  // A strategy may be a module path: keep what queue and database names allow.
  const id = `${name.replace(/\.[cm]?[jt]s$/, "").replace(/[^a-z0-9]+/gi, "_").slice(-40).toLowerCase()}_${
    randomBytes(3).toString("hex")
  }`;
  // Long enough that no message comes back while the slowest phase is still working.
  const queueUrl = await emulator.createQueue(`bench-${id}`.replace(/_/g, "-"), { VisibilityTimeout: "120" });
  // Made and sent in slices so a million bodies never sit in memory at once.
  const slice = bodyBytes ? 32 : 20_000;
  const bodies = createCorpus(corpus, count);
  for (let sent = 0; sent < count; sent += slice) {
    const some = bodies(Math.min(slice, count - sent));
    if (!bodyBytes) {
      await sendBodies(sqs, queueUrl, some, 32);
      continue;
    }
    // One per call: SQS takes 1 MiB per call.
    const padded = some.map((body) => body.slice(0, -1) + `,"padding":"${"p".repeat(bodyBytes - body.length - 14)}"}`);
    await Promise.all(padded.map((body) => sendBodies(sqs, queueUrl, [body], 1)));
  }
  const databaseUrl = await postgres.createDatabase(`bench_${id}`);
  return {
    queueUrl,
    databaseUrl,
    async drop() {
      await sqs.send(new DeleteQueueCommand({ QueueUrl: queueUrl }));
      const pool = await createPool(postgres.url, { maxPoolSize: 1 });
      try {
        await pool.query(sql.unsafe`DROP DATABASE IF EXISTS ${sql.identifier([`bench_${id}`])} WITH (FORCE)`);
      } finally {
        await pool.end();
      }
    },
  };
}

/** Messages in a queue, in any state. */
export async function queueDepth(sqs: SQSClient, queueUrl: string): Promise<number> {
  const { visible, inFlight, delayed } = await readQueueDepth(sqs, queueUrl);
  return visible + inFlight + delayed;
}

export async function countRows(databaseUrl: string): Promise<number> {
  const pool = await createPool(databaseUrl, { maxPoolSize: 1 });
  try {
    const exists = await pool.oneFirst(sql.unsafe`SELECT to_regclass('user_logins') IS NOT NULL`);
    return exists ? Number(await pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM user_logins`)) : 0;
  } finally {
    await pool.end();
  }
}
