/**
 * `.env.example` names every variable the tool reads: what parseConfig and every built-in
 * strategy ask of the environment they are given (recorded, not listed by hand), what the
 * code reads from process.env itself, and the AWS SDK's region and endpoint.
 */
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { SETTINGS } from "../src/config.ts";
import { loadStrategy, parseConfig, STRATEGY_NAMES } from "../mod.ts";
import { ROOT } from "./helpers.ts";

/** An environment that records each name read; `value` answers for names it is asked. */
function recordingEnv(
  read: Set<string>,
  value: (name: string) => string | undefined,
): Record<string, string | undefined> {
  return new Proxy({}, {
    get(_, name) {
      if (typeof name !== "string") return undefined;
      read.add(name);
      return value(name);
    },
  });
}

/** The tool's sources: mod.ts and every .ts under strategies/ and src/ (where it may move). */
async function toolSources(): Promise<string[]> {
  const files = ["mod.ts"];
  for (const dir of ["strategies", "src"]) {
    const entries = await readdir(join(ROOT, dir), { recursive: true }).catch(() => [] as string[]);
    files.push(...entries.filter((f) => f.endsWith(".ts")).map((f) => join(dir, f)));
  }
  return await Promise.all(files.map((f) => readFile(join(ROOT, f), "utf8")));
}

it("lists every variable the tool reads", async () => {
  const read = new Set<string>();
  // With nothing set, parseConfig reads each variable before it fails on the first missing one.
  try {
    parseConfig([], recordingEnv(read, () => undefined));
  } catch { /* expected: no queue */ }
  // A strategy reads its key, fails without it, and reads further names only with one.
  for (const name of STRATEGY_NAMES) {
    for (const value of [() => undefined, (v: string) => (v.endsWith("_VERSION") ? undefined : "ab".repeat(32))]) {
      await loadStrategy(name, { env: recordingEnv(read, value) }).catch(() => {});
    }
  }
  for (const source of await toolSources()) {
    for (const m of source.matchAll(/process\.env(?:\.([A-Z][A-Z0-9_]*)|\[["']([A-Z][A-Z0-9_]*)["']\])/g)) {
      read.add((m[1] ?? m[2])!);
    }
  }
  // Sanity: the recording saw what the tool is known to read.
  expect(read).toContain("QUEUE_URL");
  expect(read).toContain("MASK_HMAC_KEY");
  expect(read).toContain("VAULT_TOKEN_KEY");
  expect(read).toContain("VAULT_RECOVERY_PUBLIC_KEY");

  const example = await readFile(join(ROOT, ".env.example"), "utf8");
  const listed = new Set([...example.matchAll(/^#?\s*([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]!));
  const missing = [...read, "AWS_REGION", "AWS_ENDPOINT_URL"].filter((name) => !listed.has(name));
  expect(missing).toEqual([]);
});

describe("the settings table (src/config.ts) is what .env.example and the README say", () => {
  it(".env.example lists each setting's variable, with its default where it gives a value", async () => {
    const example = await readFile(join(ROOT, ".env.example"), "utf8");
    for (const spec of SETTINGS.filter((s) => s.env !== undefined)) {
      const line = new RegExp(`^#?\\s*${spec.env}=(.*)$`, "m").exec(example);
      expect(line, spec.env).not.toBeNull();
      const value = line![1]!.trim();
      if (value !== "" && spec.fallback !== undefined && spec.kind !== "url") {
        expect(value, spec.env).toBe(String(spec.fallback));
      }
    }
  });

  it("the README's table has a row for each setting: its flag, its variable and its default", async () => {
    const readme = await readFile(join(ROOT, "README.md"), "utf8");
    const rows = new Map(
      [...readme.matchAll(/^\| `--([a-z-]+)[^`]*` \|([^|]*)\|([^|]*)\|/gm)].map((m) => [m[1]!, {
        env: m[2]!.trim(),
        fallback: m[3]!.trim(),
      }]),
    );
    for (const spec of SETTINGS) {
      const row = rows.get(spec.flag);
      expect(row, `--${spec.flag}`).toBeDefined();
      expect(row!.env, `--${spec.flag}`).toBe(spec.env ? `\`${spec.env}\`` : "");
      if (spec.fallback !== undefined) expect(row!.fallback, `--${spec.flag}`).toContain(String(spec.fallback));
    }
  });
});
