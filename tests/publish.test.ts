/**
 * What a release ships: one version everywhere, the licence and changelog, and a JSR
 * package that `deno publish --dry-run` accepts with no slow-types escape hatch.
 */
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { VERSION } from "../mod.ts";
import { denoBinary, ROOT, runCommand } from "./helpers.ts";

const readJson = async (file: string) => JSON.parse(await readFile(join(ROOT, file), "utf8"));

describe("release files", () => {
  it("package.json, deno.json, mod.ts's VERSION and the changelog's latest release name one version", async () => {
    const pkg = await readJson("package.json");
    const deno = await readJson("deno.json");
    const changelog = await readFile(join(ROOT, "CHANGELOG.md"), "utf8");
    expect(deno.version).toBe(pkg.version);
    expect(VERSION).toBe(pkg.version);
    // Keep a Changelog: "## [Unreleased]" first, then releases, newest first.
    const released = [...changelog.matchAll(/^## \[(\d+\.\d+\.\d+[^\]]*)\] - \d{4}-\d{2}-\d{2}$/gm)].map((m) => m[1]);
    expect(released[0]).toBe(pkg.version);
    expect(changelog).toMatch(/^## \[Unreleased\]$/m);
  });

  it("is MIT licensed, and says so in package.json and deno.json", async () => {
    const license = await readFile(join(ROOT, "LICENSE"), "utf8");
    expect(license).toMatch(/^MIT License\n\nCopyright \(c\) \d{4} /);
    expect(license).toContain('THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND');
    expect((await readJson("package.json")).license).toBe("MIT");
    expect((await readJson("deno.json")).license).toBe("MIT");
  });
});

describe("JSR", () => {
  it("deno publish --dry-run passes with explicit types (no --allow-slow-types) and ships the tool, not its tests", async () => {
    const deno = await readJson("deno.json");
    expect(deno.name).toMatch(/^@[a-z0-9-]+\/[a-z0-9-]+$/);
    // The same subpaths as the npm package: the API and each public strategy, no private part.
    const strategies = (await readdir(join(ROOT, "strategies"))).filter((f) => /^[a-z][a-z0-9-]*\.ts$/.test(f));
    expect(deno.exports).toEqual({
      ".": "./mod.ts",
      ...Object.fromEntries(strategies.map((f) => [`./strategies/${f.slice(0, -3)}`, `./strategies/${f}`])),
    });
    const npmExports = (await readJson("package.json")).exports;
    expect(npmExports["./strategies/_*"]).toBeNull();
    // --allow-dirty: a working tree under development has uncommitted files; CI's clone has none.
    const run = await runCommand(denoBinary(), ["publish", "--dry-run", "--allow-dirty"], {
      DENO_NO_UPDATE_CHECK: "1",
      NO_COLOR: "1",
    });
    expect(run.stderr).not.toMatch(/^(error|warning\[(?!unanalyzable-dynamic-import))/m);
    expect(run.code).toBe(0);
    const output = run.stdout + run.stderr;
    expect(output).toContain(`Simulating publish of ${deno.name}@${deno.version}`);
    for (
      const file of [
        "mod.ts",
        "strategies/hmac.ts",
        "strategies/sha256.ts",
        "strategies/vault.ts",
        "LICENSE",
        "README.md",
      ]
    ) {
      expect(output).toMatch(new RegExp(`${file.replace(/\./g, "\\.")}\\b`));
    }
    expect(output).not.toMatch(/tests\/|scripts\/bench\.ts|node_modules/);
  });
});
