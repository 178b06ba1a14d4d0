/**
 * The npm package as a user gets it: `npm pack`, the tarball installed into an empty folder,
 * then the installed command, its subcommands (check against real services) and the public
 * API, with nothing of this checkout in reach.
 */
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadStrategy } from "../mod.ts";
import { INVALID_BODIES, sampleBodies, sendBodies } from "../scripts/produce.ts";
import { SUBCOMMANDS } from "../src/commands/registry.ts";
import { readQueueDepth } from "../src/sqs.ts";
import { VAULT_ROLES_SQL } from "../strategies/_vault-roles.ts";
import {
  countRows,
  createFixture,
  olderNode,
  readRows,
  receiveAll,
  ROOT,
  runCommand,
  TEST_HMAC_KEY,
} from "./helpers.ts";

const pkg = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8"));

describe("the npm package, installed from its tarball into an empty folder", () => {
  let work = "";
  let app = "";
  // Run in the installed folder the way a user does; PATH keeps this project's Node 24 first.
  const npx = (args: readonly string[], env: Record<string, string> = {}) =>
    runCommand("npx", ["--no-install", ...args], { npm_config_update_notifier: "false", ...env }, app);

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "login-masker-pack-"));
    app = join(work, "app");
    // One pack, so one build (prepack); every test below uses this tarball.
    const packed = JSON.parse(
      execFileSync("npm", ["pack", "--json", "--pack-destination", work], { cwd: ROOT, encoding: "utf8" }),
    );
    const tarball = join(work, packed[0].filename);
    execFileSync("mkdir", [app]);
    execFileSync("npm", ["install", "--no-audit", "--no-fund", "--loglevel=error", tarball], {
      cwd: app,
      stdio: ["ignore", "ignore", "inherit"],
    });
  }, 180_000);
  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("ships JavaScript and declarations, not the TypeScript sources or the tests", () => {
    const installed = join(app, "node_modules", pkg.name);
    const files = execFileSync("find", [".", "-type", "f"], { cwd: installed, encoding: "utf8" }).split("\n").filter(
      Boolean,
    ).sort();
    expect(files).toContain("./dist/mod.js");
    expect(files).toContain("./dist/mod.d.ts");
    expect(files).toContain("./dist/strategies/hmac.js");
    expect(files.filter((f) => /\.ts$/.test(f) && !/\.d\.ts$/.test(f))).toEqual([]);
    expect(files.filter((f) => f.startsWith("./tests/") || f.startsWith("./scripts/"))).toEqual([]);
  });

  it("npx sqs-login-masker --help and --version", async () => {
    const help = await npx(["sqs-login-masker", "--help"]);
    expect(help.stderr).toBe("");
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: sqs-login-masker \[options\]/);
    const version = await npx(["sqs-login-masker", "--version"]);
    expect(version.code).toBe(0);
    expect(version.stdout).toBe(`sqs-login-masker ${pkg.version}\n`);
  });

  it("every subcommand answers --help, and vault-roles prints the roles SQL", { timeout: 180_000 }, async () => {
    for (const name of Object.keys(SUBCOMMANDS)) {
      const run = await npx(["sqs-login-masker", name, "--help"]);
      expect(run.stderr, name).toBe("");
      expect(run.code, name).toBe(0);
      expect(run.stdout).toMatch(new RegExp(`^Usage: sqs-login-masker ${name}[ \\n]`));
    }
    const roles = await npx(["sqs-login-masker", "vault-roles"]);
    expect(roles.code).toBe(0);
    expect(roles.stdout).toBe(VAULT_ROLES_SQL);
  });

  it("check on real services: ready (exit 0, nothing received), and a missing queue (one line, exit 1)", {
    timeout: 180_000,
  }, async () => {
    const f = await createFixture({ maxReceiveCount: 5 });
    try {
      await sendBodies(f.sqs, f.queueUrl, sampleBodies(12, 0, 9));
      const ready = await npx(["sqs-login-masker", "check"], f.env);
      expect(ready.stderr).toBe("");
      expect(ready.code).toBe(0);
      expect(ready.stdout).toMatch(/^ok: --queue-url /m);
      expect(await readQueueDepth(f.sqs, f.queueUrl)).toEqual({ visible: 12, inFlight: 0, delayed: 0 });

      const missing = new URL("/000000000000/no-such-queue", f.endpoint).toString();
      const gone = await npx(["sqs-login-masker", "check"], { ...f.env, QUEUE_URL: missing });
      expect(gone.stderr).toBe(
        `error: Cannot use --queue-url ${missing}: queue does not exist (check the URL and region)\n`,
      );
      expect(gone.code).toBe(1);
    } finally {
      await f.close();
    }
  });

  it("a bad flag: exit 2 and one line", async () => {
    const run = await npx(["sqs-login-masker", "--batch-size", "zero"]);
    expect(run.code).toBe(2);
    expect(run.stderr).toBe('error: --batch-size must be a whole number from 1 to 10000, got "zero"\n');
  });

  it("drains a mixed batch from the emulator into Postgres", async () => {
    const f = await createFixture();
    try {
      const valid = sampleBodies(30, 0, 5);
      await sendBodies(f.sqs, f.queueUrl, [...valid, ...INVALID_BODIES.slice(0, 3).map((i) => i.body)]);
      const run = await npx(["sqs-login-masker", "--drain"], f.env);
      expect(run.stderr).not.toMatch(/^error/m);
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/^loaded=30 duplicates=0 dead_lettered=3 left_in_queue=0 /);
      expect(await countRows(f.pool)).toBe(30);
      const hmac = await loadStrategy("hmac", { env: { MASK_HMAC_KEY: TEST_HMAC_KEY } });
      const masked = new Set((await readRows(f.pool)).map((r) => r.masked_ip));
      for (const body of valid) expect(masked.has(await hmac.mask(JSON.parse(body).ip, "ip"))).toBe(true);
      expect(await receiveAll(f.sqs, f.dlqUrl)).toHaveLength(3);
    } finally {
      await f.close();
    }
  });

  it("exports the API and the plugin contract's types: a user's strategy type-checks against them and runs", async () => {
    // An ES module project, as a user's own would be.
    const appPackage = JSON.parse(await readFile(join(app, "package.json"), "utf8"));
    await writeFile(join(app, "package.json"), JSON.stringify({ ...appPackage, type: "module" }, null, 2));
    await writeFile(
      join(app, "reverse.ts"),
      [
        'import type { MaskStrategy, StrategyOptions } from "sqs-login-masker";',
        "export function create(_options: StrategyOptions): MaskStrategy {",
        '  return { name: "reverse", mask: (value) => "r:" + [...value].reverse().join("") };',
        "}",
        "",
      ].join("\n"),
    );
    const tsc = join(ROOT, "node_modules", ".bin", "tsc");
    const check = await runCommand(
      tsc,
      [
        "--noEmit",
        "--strict",
        "--module",
        "nodenext",
        "--moduleResolution",
        "nodenext",
        "--target",
        "es2024",
        "--skipLibCheck",
        "--types",
        "",
        "reverse.ts",
      ],
      {},
      app,
    );
    expect(check.stdout + check.stderr).toBe("");
    expect(check.code).toBe(0);
    const script =
      'import { VERSION, loadStrategy } from "sqs-login-masker"; import { sha256Hex } from "sqs-login-masker/strategies/sha256";' +
      'const s = await loadStrategy("./reverse.ts", { env: {} }); console.log(VERSION, await s.mask("abc", "ip"), sha256Hex("abc").slice(0, 8));';
    const run = await runCommand(process.execPath, ["--input-type=module", "-e", script], {}, app);
    expect(run.stderr).toBe("");
    expect(run.stdout).toBe(`${pkg.version} r:cba ba7816bf\n`);
    // The strategies' private parts ship (the strategies import them) but are not exported.
    const hidden = await runCommand(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        'import("sqs-login-masker/strategies/_vault-crypto").then(() => console.log("exported"), (e) => console.log(e.code))',
      ],
      {},
      app,
    );
    expect(hidden.stdout).toBe("ERR_PACKAGE_PATH_NOT_EXPORTED\n");
  });

  const oldNode = olderNode();
  it.skipIf(oldNode === undefined)(
    `on a Node older than ${pkg.engines.node} (${oldNode}): one plain line, exit 1`,
    async () => {
      const bin = join(app, "node_modules", ".bin", "sqs-login-masker");
      const run = await runCommand(oldNode!, [bin, "--help"], {}, app);
      expect(run.code).toBe(1);
      expect(run.stdout).toBe("");
      expect(run.stderr).toMatch(
        new RegExp(
          `^error: sqs-login-masker needs Node\\.js ${
            pkg.engines.node.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
          }; this is v\\d+\\.\\d+\\.\\d+\\. .*\\n$`,
        ),
      );
      expect(run.stderr.split("\n")).toHaveLength(2);
    },
  );
});
