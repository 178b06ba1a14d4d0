/**
 * `.env.example` names every variable the tool reads: what parseConfig and every built-in
 * strategy ask of the environment they are given (recorded, not listed by hand), what the
 * code reads from process.env itself, and the AWS SDK's region and endpoint.
 */
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { expect, it } from "vitest";
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
