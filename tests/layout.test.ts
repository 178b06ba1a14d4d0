/**
 * The shape of the code, held by tests: imports flow one way (no cycle; leaves import no
 * project file; strategies import the contract and leaves; only the masking loader and the
 * operator commands import strategies/; the consumer is an SQS source that imports none of the
 * login pipeline, its database, configuration, the command line or metrics),
 * mod.ts stays a door, and the lint gate's own rule catches a long function.
 */
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { denoBinary, ROOT, runCommand } from "./helpers.ts";

/** The tool's own code: what the rules are about (tests may import anything). */
const TOOL_ROOTS = ["mod.ts", "src", "strategies", "scripts"];
/** Files that import no project file: everything else may build on them. */
const LEAVES = [
  "src/errors.ts",
  "src/contract.ts",
  "src/log.ts",
  "src/timing.ts",
  "src/typed-sql.ts",
  "src/runtime.ts",
  "src/ip.ts",
];
const MASKING_LOADER = "src/masking.ts";
/** The subcommands that work on what a strategy stored (recover, rotate, decrypt) use its private parts. */
const OPERATOR_COMMANDS = "src/commands/";
/**
 * All the consumer may import: it is an SQS source, configured by whoever calls it, that
 * hands batches to a handler (src/consumer/port.ts). Schema, masking, sink and database are
 * the login pipeline's (src/pipeline.ts).
 */
const FOR_THE_CONSUMER = ["src/errors.ts", "src/log.ts", "src/timing.ts", "src/sqs.ts", "src/dead-letter.ts"];
/** Packages the consumer may import: SQS's client, and the runtime's own. */
const CONSUMER_PACKAGES = /^(@aws-sdk\/client-sqs|node:.*)$/;

async function toolFiles(): Promise<string[]> {
  const files: string[] = [];
  async function walk(path: string): Promise<void> {
    const entries = await readdir(join(ROOT, path), { withFileTypes: true }).catch(() => undefined);
    if (!entries) return void (path.endsWith(".ts") && files.push(path));
    for (const entry of entries) await walk(join(path, entry.name));
  }
  for (const root of TOOL_ROOTS) await walk(root);
  return files.filter((f) => f.endsWith(".ts")).sort();
}

/** Each file's imports of project files, as paths from the root (static, dynamic and re-exports). */
async function importGraph(): Promise<Map<string, string[]>> {
  const graph = new Map<string, string[]>();
  for (const file of await toolFiles()) {
    // Comments may show imports (a usage example): only code counts.
    const source = await readFile(join(ROOT, file), "utf8");
    const text = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
    const specifiers = [...text.matchAll(/(?:from\s+|import\s*\(\s*)["'](\.{1,2}\/[^"']+)["']/g)].map((m) => m[1]!);
    graph.set(file, specifiers.map((s) => relative(ROOT, resolve(join(ROOT, dirname(file)), s))));
  }
  return graph;
}

function findCycle(graph: Map<string, string[]>): string[] | undefined {
  const state = new Map<string, "visiting" | "done">();
  const path: string[] = [];
  const visit = (file: string): string[] | undefined => {
    if (state.get(file) === "done") return undefined;
    if (state.get(file) === "visiting") return [...path.slice(path.indexOf(file)), file];
    state.set(file, "visiting");
    path.push(file);
    for (const next of graph.get(file) ?? []) {
      const cycle = visit(next);
      if (cycle) return cycle;
    }
    path.pop();
    state.set(file, "done");
    return undefined;
  };
  for (const file of graph.keys()) {
    const cycle = visit(file);
    if (cycle) return cycle;
  }
  return undefined;
}

/** Every import that breaks a rule, as "from -> to (rule)". */
function brokenRules(graph: Map<string, string[]>): string[] {
  const broken: string[] = [];
  for (const [from, imports] of graph) {
    for (const to of imports) {
      const fail = (rule: string) => broken.push(`${from} -> ${to} (${rule})`);
      if (LEAVES.includes(from)) fail("a leaf imports no project file");
      if (from.startsWith("strategies/") && !(LEAVES.includes(to) || to.startsWith("strategies/"))) {
        fail("a strategy imports the contract and leaves only");
      }
      if (
        to.startsWith("strategies/") && (from === "mod.ts" || from.startsWith("src/")) && from !== MASKING_LOADER &&
        !from.startsWith(OPERATOR_COMMANDS)
      ) {
        fail("only the masking loader and the operator commands import strategies/");
      }
      if (from.startsWith("src/consumer/") && !to.startsWith("src/consumer/") && !FOR_THE_CONSUMER.includes(to)) {
        fail("the consumer is an SQS source: it imports no pipeline, database, config, CLI or metrics module");
      }
      if (
        (from.startsWith("src/") || from.startsWith("strategies/")) && (to === "mod.ts" || to.startsWith("scripts/"))
      ) {
        fail("src/ and strategies/ never import mod.ts or scripts/");
      }
    }
  }
  return broken;
}

describe("imports flow one way", () => {
  it("closes no cycle", async () => {
    expect(findCycle(await importGraph())).toBeUndefined();
  });

  it("breaks no layering rule", async () => {
    expect(brokenRules(await importGraph())).toEqual([]);
  });

  it("keeps the consumer off Slonik, pg and every package but SQS's client", async () => {
    const outside: string[] = [];
    for (const file of (await toolFiles()).filter((f) => f.startsWith("src/consumer/"))) {
      const text = await readFile(join(ROOT, file), "utf8");
      for (const [, name] of text.matchAll(/(?:from\s+|import\s*\(\s*)["']([^."'][^"']*)["']/g)) {
        if (!CONSUMER_PACKAGES.test(name!)) outside.push(`${file} -> ${name}`);
      }
    }
    expect(outside).toEqual([]);
    expect(CONSUMER_PACKAGES.test("slonik")).toBe(false);
  });

  it("would notice a broken rule and a cycle (the checks can fail)", () => {
    const graph = new Map([
      ["src/errors.ts", ["src/log.ts"]],
      ["src/consumer/batches.ts", ["src/metrics.ts"]],
      ["src/consumer/source.ts", ["src/schema.ts"]],
      ["strategies/hmac.ts", ["mod.ts"]],
      ["src/sink.ts", ["strategies/vault.ts"]],
      ["src/a.ts", ["src/b.ts"]],
      ["src/b.ts", ["src/a.ts"]],
    ]);
    expect(brokenRules(graph)).toHaveLength(6);
    expect(findCycle(graph)).toEqual(["src/a.ts", "src/b.ts", "src/a.ts"]);
  });
});

describe("mod.ts is a door", () => {
  it("is about a hundred lines: a module doc, re-exports and a main guard", async () => {
    const text = await readFile(join(ROOT, "mod.ts"), "utf8");
    expect(text.split("\n").length).toBeLessThanOrEqual(120);
    expect(text).toMatch(/^\/\*\*[\s\S]*?@module\n \*\//);
    // import.meta.main where the runtime has it, else the script Node was given.
    expect(text).toMatch(/^if \(isMainModule\(import\.meta\)\) \{/m);
    // No function of its own beyond the guard: the work lives in src/.
    expect(text.match(/^(export )?(async )?function /gm)).toBeNull();
  });
});

describe("the lint gate", { timeout: 60_000 }, () => {
  it("refuses a function longer than 80 lines in the tool's code", async () => {
    // Linted in place of a src/ file: the rule reads the path to spare tests.
    const dir = await mkdtemp(join(tmpdir(), "lint-rule-"));
    try {
      const body = Array.from({ length: 85 }, (_, i) => `  total += ${i};`).join("\n");
      await writeFile(
        join(dir, "long.ts"),
        `export function long(): number {\n  let total = 0;\n${body}\n  return total;\n}\n`,
      );
      await writeFile(
        join(dir, "deno.json"),
        JSON.stringify({ lint: { plugins: [join(ROOT, "scripts", "_lint-rules.ts")] } }),
      );
      const run = await runCommand(
        denoBinary(),
        ["lint", "long.ts"],
        { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
        dir,
      );
      expect(run.stdout + run.stderr).toMatch(/project\/max-function-lines[\s\S]*This function is \d+ lines long/);
      expect(run.code).not.toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("the public API", () => {
  it("is about thirty names: what a library user builds a consumer from, and the plugin contract", async () => {
    const exported = Object.keys(await import("../mod.ts")).sort();
    expect(exported).toEqual([
      "ConfigError",
      "FatalError",
      "LoginMessage",
      "STRATEGY_NAMES",
      "UserLoginRow",
      "VERSION",
      "canonicalIp",
      "createConsumer",
      "createDatabasePool",
      "createLogger",
      "createSqsClient",
      "decodeAppVersion",
      "decodeMessage",
      "ensureMaskRecord",
      "ensureSchema",
      "keyFingerprint",
      "loadStrategy",
      "main",
      "maskRecord",
      "parseConfig",
    ]);
  });
});
