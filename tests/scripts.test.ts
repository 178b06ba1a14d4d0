/**
 * Every script in scripts/ is a real command: --help, one line and exit 2 for a bad flag or
 * value, and, where it talks to a queue, the same one-line errors as mod.ts. The operator's
 * commands there are wrappers of the subcommands, kept for runbooks.
 */
import { describe, expect, it } from "vitest";
import { STRATEGY_NAMES } from "../mod.ts";
import { createFixture, queueDepth, runTool } from "./helpers.ts";

const COMMANDS = ["demo", "produce", "bench", "recover", "forget", "rotate-vault-key", "ipcrypt"];
/** Wrappers kept for runbooks: each runs the subcommand of its name, whose usage it prints. */
const WRAPPERS = ["recover", "forget", "rotate-vault-key", "ipcrypt"];
const run = (script: string, args: readonly string[], env: Record<string, string | undefined> = {}) =>
  runTool(args, env, `scripts/${script}.ts`);

describe.each(COMMANDS)("scripts/%s.ts", (script) => {
  it("--help prints its usage and exits 0, doing nothing else", async () => {
    const { code, stdout, stderr } = await run(script, ["--help"]);
    expect(stderr).toBe("");
    expect(code).toBe(0);
    expect(stdout).toMatch(
      new RegExp(
        WRAPPERS.includes(script) ? `^Usage: sqs-login-masker ${script} ` : `^Usage: npx tsx scripts/${script}\\.ts`,
      ),
    );
  });

  it("an unknown flag: exit 2, one line pointing to --help", async () => {
    const { code, stdout, stderr } = await run(script, ["--no-such-flag"]);
    expect(stderr).toMatch(/^error: Unknown option '--no-such-flag'.*run with --help.*\n$/);
    expect(stderr.split("\n")).toHaveLength(2);
    expect(code).toBe(2);
    expect(stdout).toBe("");
  });
});

describe("scripts/produce.ts", () => {
  const aws = { AWS_REGION: "us-east-1", AWS_ACCESS_KEY_ID: "x", AWS_SECRET_ACCESS_KEY: "y", AWS_MAX_ATTEMPTS: "1" };
  const queue = "http://127.0.0.1:9/000000000000/nowhere";

  it.each([
    [["--count", "abc"], 'error: --count must be a whole number from 1 to 1000000, got "abc"'],
    [["--count", "0"], 'error: --count must be a whole number from 1 to 1000000, got "0"'],
    [["--invalid", "2"], 'error: --invalid must be a share from 0 to 1, got "2"'],
    [["--seed=-1"], 'error: --seed must be a whole number from 0 to 4294967295, got "-1"'],
  ])("a bad value %j: exit 2, one line, nothing sent", async (args, message) => {
    const { code, stdout, stderr } = await run("produce", [...args, "--queue-url", queue], aws);
    expect(stderr).toBe(message + "\n");
    expect(code).toBe(2);
    expect(stdout).toBe("");
  });

  it("no queue: the same line as mod.ts, exit 2", async () => {
    const { code, stderr } = await run("produce", [], aws);
    expect(stderr).toBe("error: No queue given: pass --queue-url URL or set QUEUE_URL\n");
    expect(code).toBe(2);
  });

  it("no region: the same line as mod.ts, exit 2", async () => {
    const { code, stderr } = await run("produce", ["--queue-url", queue], {
      AWS_ACCESS_KEY_ID: "x",
      AWS_SECRET_ACCESS_KEY: "y",
      AWS_CONFIG_FILE: "/nonexistent",
    });
    expect(stderr).toBe("error: AWS region is not set: set AWS_REGION (or a region in your AWS profile)\n");
    expect(code).toBe(2);
  });

  it("an unreachable queue: the same line as mod.ts, exit 1", async () => {
    const { code, stderr } = await run("produce", ["--queue-url", queue], aws);
    expect(stderr).toMatch(
      /^error: Cannot use --queue-url http:\/\/127\.0\.0\.1:9\/000000000000\/nowhere: endpoint unreachable \(ECONNREFUSED\)/,
    );
    expect(stderr.trim().split("\n")).toHaveLength(1);
    expect(code).toBe(1);
  });

  it("sends what it is asked to, to the queue QUEUE_URL names", async () => {
    const f = await createFixture();
    try {
      const { code, stdout, stderr } = await run(
        "produce",
        ["--count", "25", "--invalid", "0.2", "--seed", "3"],
        f.env,
      );
      expect(stderr).toBe("");
      expect(code).toBe(0);
      expect(stdout).toBe(`sent 25 messages to ${f.queueUrl}\n`);
      expect(await queueDepth(f.sqs, f.queueUrl)).toBe(25);
    } finally {
      await f.close();
    }
  });
});

describe("scripts/bench.ts", () => {
  it.each([
    [["--n", "abc"], 'error: --n must be a whole number from 1 to 100000000, got "abc"'],
    [["--phases", "tool,nap"], 'error: --phases takes ceiling, sqs-consumer, tool, large, baseline, got "nap"'],
    [
      ["--strategies", "md5"],
      `error: Unknown strategy "md5": use one of ${STRATEGY_NAMES.join(", ")}, or a path to your own module`,
    ],
    [["--tool-dir", "docs"], "error: --tool-dir docs has no mod.ts: give a checkout with its dependencies installed"],
    [["--entry", "docker"], 'error: --entry takes source or bundle, got "docker"'],
  ])("a bad value %j: exit 2, one line, before anything starts", async (args, message) => {
    const { code, stderr } = await run("bench", args);
    expect(stderr).toBe(message + "\n");
    expect(code).toBe(2);
  });
});
