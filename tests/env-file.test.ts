/**
 * `--env-file PATH`: every command reads its settings (AWS's too) from a file of KEY=value
 * lines; flags > environment > env file > defaults; a file that cannot be read is one line.
 * And a filled-in `.env` goes neither into git nor into the image.
 */
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { ConfigError } from "../mod.ts";
import { takeEnvFiles, withEnvFiles } from "../src/env-file.ts";
import { main } from "../src/main.ts";
import { createFixture, ROOT, runTool } from "./helpers.ts";

let dir = "";
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "login-masker-env-"));
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** A file of the given lines in the test's folder; its path. */
async function envFile(name: string, lines: readonly string[]): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, lines.join("\n") + "\n");
  return path;
}

describe("--env-file", () => {
  it("parses as Node's own --env-file does: quotes, comments, export, = in values", async () => {
    const path = await envFile("parse.env", [
      "# a comment",
      'export A="x # y"',
      "B='z'",
      "C=plain # trailing",
      "D=a=b",
      '  E = "multi',
      'line"',
    ]);
    expect(withEnvFiles([path], {})).toEqual({ A: "x # y", B: "z", C: "plain", D: "a=b", E: "multi\nline" });
  });

  it("is taken out of the arguments wherever it stands, in either form", () => {
    expect(takeEnvFiles(["recover", "--env-file", "a.env", "TOKEN", "--env-file=b.env"])).toEqual({
      argv: ["recover", "TOKEN"],
      paths: ["a.env", "b.env"],
    });
  });

  it("flags > environment > env file (a later file over an earlier one) > defaults", { timeout: 180_000 }, async () => {
    const base = await envFile("base.env", [
      "QUEUE_URL=http://127.0.0.1:9/000000000000/q",
      "DATABASE_URL=postgres://u@127.0.0.1:9/x",
      "BATCH_DEADLINE_SECONDS=from-base",
    ]);
    const later = await envFile("later.env", ["BATCH_DEADLINE_SECONDS=from-later"]);
    const cases: [string[], Record<string, string>, string][] = [
      [["--env-file", base], {}, 'BATCH_DEADLINE_SECONDS must be a whole number from 1 to 86400, got "from-base"'],
      [["--env-file", base, "--env-file", later], {}, '"from-later"'],
      [["--env-file", base], { BATCH_DEADLINE_SECONDS: "from-env" }, '"from-env"'],
      [
        ["--env-file", base, "--batch-deadline", "from-flag"],
        { BATCH_DEADLINE_SECONDS: "from-env" },
        '--batch-deadline must be a whole number from 1 to 86400, got "from-flag"',
      ],
    ];
    for (const [args, env, message] of cases) {
      const run = await runTool(args, env);
      expect(run.stderr, args.join(" ")).toContain(message);
      expect(run.stderr.split("\n")).toHaveLength(2);
      expect(run.code).toBe(2);
    }
  });

  it("a file that is not there, or no path: one line naming it, exit non-zero, before anything else", async () => {
    const missing = join(dir, "nope.env");
    expect(() => withEnvFiles([missing], {})).toThrow(new ConfigError(`--env-file ${missing}: no such file`));
    // Node itself looks for an --env-file among a script's arguments and, when the file is
    // not there, says so and exits 9 before the tool starts (nodejs/node#54232).
    const run = await runTool(["check", "--env-file", missing], {});
    expect(run.stderr).toMatch(
      new RegExp(`^(error: --env-file ${missing}: no such file|\\S*node: ${missing}: not found)\n$`),
    );
    expect(run.code).not.toBe(0);
    const bare = await runTool(["--drain", "--env-file"], {});
    expect(bare.stderr).toBe("error: --env-file needs a path: --env-file .env\n");
    expect(bare.code).toBe(2);
  });

  it("a file that cannot be read for another reason: still one line, exit 1, no stack", async () => {
    const underAFile = join(await envFile("plain.env", ["A=1"]), "x.env");
    const written: string[] = [];
    const spy = vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk));
      return true;
    });
    try {
      expect(await main(["--env-file", underAFile, "--version"], {})).toBe(1);
    } finally {
      spy.mockRestore();
    }
    expect(written).toEqual([expect.stringMatching(/^error: ENOTDIR\b[^\n]*\n$/)]);
  });

  it("gives check every setting, the AWS SDK's region, endpoint and credentials too", async () => {
    const f = await createFixture({ maxReceiveCount: 5 });
    try {
      const path = await envFile("fixture.env", Object.entries(f.env).map(([name, value]) => `${name}="${value}"`));
      // Only PATH and HOME in the environment: everything else comes from the file.
      const run = await runTool(["check", "--env-file", path], {});
      expect(run.stderr).toBe("");
      expect(run.code).toBe(0);
      expect(run.stdout).toContain(`ok: --queue-url ${f.queueUrl}: reachable`);
    } finally {
      await f.close();
    }
  });
});

describe("a filled-in .env stays private", () => {
  const ignoredByGit = (path: string) => {
    try {
      execFileSync("git", ["check-ignore", "-q", path], { cwd: ROOT });
      return true;
    } catch {
      return false;
    }
  };

  it("git ignores .env (and .env.local), and npm pack's tarball, but not .env.example", () => {
    expect(ignoredByGit(".env")).toBe(true);
    expect(ignoredByGit(".env.local")).toBe(true);
    expect(ignoredByGit("sqs-login-masker-0.1.0.tgz")).toBe(true);
    expect(ignoredByGit(".env.example")).toBe(false);
  });

  it("the image build leaves out .env and tarballs", async () => {
    const ignored = (await readFile(join(ROOT, ".dockerignore"), "utf8")).split("\n");
    expect(ignored).toEqual(expect.arrayContaining([".env", ".env.*", "*.tgz"]));
  });
});
