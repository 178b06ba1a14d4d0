/**
 * The single-file build (`npm run bundle`): one ESM file that runs in an empty folder under
 * Node 24 and under Deno, with every subcommand, a user's strategy by path, and a drain on
 * the real emulator and Postgres; on an older Node, one line and exit 1.
 */
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { ensureSchema } from "../mod.ts";
import { INVALID_BODIES, sampleBodies, sendBodies } from "../scripts/produce.ts";
import { SUBCOMMANDS } from "../src/commands/registry.ts";
import { DENO_PERMISSIONS } from "../src/runtime.ts";
import {
  countRows,
  createFixture,
  denoBinary,
  emptyTempDir,
  olderNode,
  queueDepth,
  receiveAll,
  runCommand,
} from "./helpers.ts";

const BUNDLE = "sqs-login-masker.mjs";
let dir = "";

/** Run the bundle from its empty folder, under Node 24 or Deno. */
function runBundle(runtime: "node" | "deno", args: readonly string[], env: Record<string, string> = {}) {
  return runtime === "node" ? runCommand(process.execPath, [BUNDLE, ...args], env, dir) : runCommand(
    denoBinary(),
    ["run", ...DENO_PERMISSIONS, BUNDLE, ...args],
    { DENO_NO_UPDATE_CHECK: "1", ...env },
    dir,
  );
}

beforeAll(async () => {
  // Straight into the test's own folder: the package test empties dist/ when it packs.
  dir = await emptyTempDir();
  const build = await runCommand(process.execPath, ["scripts/bundle.ts", "--out", join(dir, BUNDLE)], {});
  expect(build.stderr).toBe("");
  expect(build.code).toBe(0);
}, 120_000);

describe("the single-file build", { timeout: 120_000 }, () => {
  it("is one file that imports nothing but the runtime's built-ins", async () => {
    const text = await readFile(join(dir, BUNDLE), "utf8");
    expect(text.startsWith("#!/usr/bin/env node\n")).toBe(true);
    const imports = [...text.matchAll(/^\s*import\s[^;]*?from\s*"([^"]+)"|^\s*import\s*"([^"]+)"/gm)].map((m) =>
      m[1] ?? m[2]
    );
    expect(imports.filter((name) => !name!.startsWith("node:"))).toEqual([]);
  });

  for (const runtime of ["node", "deno"] as const) {
    it(`under ${runtime === "node" ? "Node 24" : "Deno"}: --help and every subcommand's --help`, async () => {
      for (const args of [["--help"], ...Object.keys(SUBCOMMANDS).map((name) => [name, "--help"])]) {
        const run = await runBundle(runtime, args);
        expect(run.stderr, args.join(" ")).toBe("");
        expect(run.code, args.join(" ")).toBe(0);
        expect(run.stdout, args.join(" ")).toMatch(/^Usage: sqs-login-masker/);
      }
    });

    it(`under ${runtime === "node" ? "Node 24" : "Deno"}: drains the emulator into Postgres with a user's strategy given by path`, async () => {
      const f = await createFixture();
      try {
        await ensureSchema(f.pool);
        // A user's own strategy, in TypeScript beside the bundle: both runtimes strip its types.
        await writeFile(
          join(dir, "reverse.ts"),
          'export function create(_options: unknown) {\n  return { name: "reverse", mask: (v: string) => "r:" + [...v].reverse().join("") };\n}\n',
        );
        const valid = sampleBodies(40, 0, 2222);
        await sendBodies(f.sqs, f.queueUrl, [...valid, ...INVALID_BODIES.slice(0, 3).map((i) => i.body)]);
        const run = await runBundle(runtime, ["--drain", "--strategy", "./reverse.ts"], f.env);
        expect(run.stderr).not.toMatch(/^error/m);
        expect(run.code).toBe(0);
        expect(run.stdout).toMatch(/^loaded=40 duplicates=0 dead_lettered=3 /);
        expect(await countRows(f.pool)).toBe(40);
        expect(await queueDepth(f.sqs, f.queueUrl)).toBe(0);
        expect(await receiveAll(f.sqs, f.dlqUrl)).toHaveLength(3);
      } finally {
        await f.close();
      }
    });
  }

  const oldNode = olderNode();
  it.skipIf(oldNode === undefined)(`on an older Node (${oldNode}): one line, exit 1`, async () => {
    const run = await runCommand(oldNode!, [BUNDLE, "--help"], {}, dir);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe("");
    expect(run.stderr).toMatch(/^error: sqs-login-masker needs Node\.js >=24; this is v\d+\.\d+\.\d+\. .*\n$/);
  });
});
