/** Configuration: flags > environment > defaults, and one clear line with exit code 2. */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY, parseConfig, redactUrl } from "../mod.ts";
import { ROOT, runTool } from "./helpers.ts";

const ENV = { QUEUE_URL: "http://127.0.0.1:4566/000000000000/q", DATABASE_URL: "postgres://u:secret@db:5432/x" };

describe("parseConfig", () => {
  it("applies defaults", () => {
    expect(parseConfig([], ENV)).toEqual({
      queueUrl: ENV.QUEUE_URL, dlqUrl: undefined, databaseUrl: ENV.DATABASE_URL, strategy: "hmac", drain: false,
      batchSize: DEFAULT_BATCH_SIZE, concurrency: DEFAULT_CONCURRENCY, logLevel: "info", metricsPort: undefined, help: false,
      version: false,
    });
  });

  it("prefers flags to the environment", () => {
    const config = parseConfig(
      ["--queue-url", "https://sqs.eu-west-1.amazonaws.com/1/flag", "--strategy", "sha256", "--dlq-url", "http://h/dlq",
        "--database-url", "postgresql://flag/db", "--drain", "--batch-size", "50", "--concurrency", "3"],
      { ...ENV, MASK_STRATEGY: "hmac", DLQ_URL: "http://h/env-dlq" },
    );
    expect(config).toMatchObject({
      queueUrl: "https://sqs.eu-west-1.amazonaws.com/1/flag", strategy: "sha256", dlqUrl: "http://h/dlq",
      databaseUrl: "postgresql://flag/db", drain: true, batchSize: 50, concurrency: 3,
    });
  });

  it("takes --metrics-port from the flag or METRICS_PORT", () => {
    expect(parseConfig(["--metrics-port", "9464"], { ...ENV, METRICS_PORT: "9000" }).metricsPort).toBe(9464);
    expect(parseConfig([], { ...ENV, METRICS_PORT: "9000" }).metricsPort).toBe(9000);
  });

  it("takes the environment when no flag is given", () => {
    expect(parseConfig([], { ...ENV, MASK_STRATEGY: "sha256", DLQ_URL: "http://h/dlq", LOG_LEVEL: "debug" }))
      .toMatchObject({ strategy: "sha256", dlqUrl: "http://h/dlq", logLevel: "debug" });
  });

  it.each([
    [[], {}, "No queue given: pass --queue-url URL or set QUEUE_URL"],
    [[], { QUEUE_URL: ENV.QUEUE_URL }, "No database given: pass --database-url URL or set DATABASE_URL"],
    [["--batch-size", "0"], ENV, '--batch-size must be a whole number from 1 to 10000, got "0"'],
    [["--batch-size", "ten"], ENV, '--batch-size must be a whole number from 1 to 10000, got "ten"'],
    [["--concurrency", "65"], ENV, '--concurrency must be a whole number from 1 to 64, got "65"'],
    [["--queue-url", "not a url"], ENV, "--queue-url is not a URL: expected http://..."],
    [["--database-url", "mysql://x/y"], ENV, "--database-url must start with postgres: or postgresql://, got mysql://"],
    [["--dlq-url", ENV.QUEUE_URL], ENV, "--dlq-url is the same queue as --queue-url: invalid messages would come straight back"],
    [["--log-level", "loud"], ENV, '--log-level must be one of debug, info, warn, error, silent, got "loud"'],
    [["--metrics-port", "70000"], ENV, '--metrics-port must be a whole number from 1 to 65535, got "70000"'],
  ])("refuses %j with %j", (argv, env, message) => {
    expect(() => parseConfig(argv, env)).toThrow(new ConfigError(message));
  });

  it("refuses an unknown flag and points to --help", () => {
    expect(() => parseConfig(["--queue", "x"], ENV)).toThrow(/Unknown option '--queue'; run with --help to see the flags/);
  });

  it("hides the password of a URL it prints", () => {
    expect(redactUrl(ENV.DATABASE_URL)).toBe("postgres://u:***@db:5432/x");
  });
});

describe("the command line", () => {
  it("prints help with the flags and why sha256 is weak", async () => {
    const { code, stdout } = await runTool(["--help"], {});
    expect(code).toBe(0);
    for (const flag of ["--queue-url", "--dlq-url", "--database-url", "--strategy", "--drain", "--batch-size", "--concurrency", "--metrics-port"]) {
      expect(stdout).toContain(flag);
    }
    expect(stdout).toMatch(/2\^32/);
  });

  it("prints its version with --version, whatever else is missing", async () => {
    const { version } = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8"));
    const { code, stdout, stderr } = await runTool(["--version"], {});
    expect(stderr).toBe("");
    expect(code).toBe(0);
    expect(stdout).toBe(`sqs-login-masker ${version}\n`);
  });

  it.each([
    [["--batch-size", "-3"], ENV, /^error: /],
    [[], {}, /^error: No queue given: pass --queue-url URL or set QUEUE_URL\n$/],
    [["--strategy", "md5"], ENV, /^error: Unknown strategy "md5": use one of hmac, sha256, vault, ipcrypt, ipcrypt-pfx, or a path to your own module\n$/],
    [[], ENV, /^error: MASK_HMAC_KEY is not set: the hmac strategy needs a secret of at least 32 bytes/],
    [["--strategy", "tests/fixtures/not-a-strategy.ts"], ENV, /^error: Strategy module tests\/fixtures\/not-a-strategy.ts does not export create\(options\)/],
    [["--strategy", "ipcrypt"], { ...ENV, MASK_IPCRYPT_KEY: "c0ffee" }, /^error: MASK_IPCRYPT_KEY is 3 bytes; ipcrypt-deterministic needs exactly 16/],
    [["--strategy", "ipcrypt-pfx"], { ...ENV, MASK_IPCRYPT_KEY: "0f".repeat(31) + "xx" }, /^error: MASK_IPCRYPT_KEY is not hex: ipcrypt-pfx needs 64 hex digits/],
    [["--strategy", "ipcrypt-pfx"], { ...ENV, MASK_IPCRYPT_KEY: "5e".repeat(32) }, /^error: MASK_IPCRYPT_KEY's two 16-byte halves are equal/],
  ])("exits 2 with one line for %j", async (argv, env, message) => {
    const { code, stderr, stdout } = await runTool(argv, env);
    expect(code).toBe(2);
    expect(stderr).toMatch(message);
    expect(stderr.trim().split("\n")).toHaveLength(1);
    expect(stdout).toBe("");
    // A key is never echoed, not even a malformed one.
    const { MASK_IPCRYPT_KEY: key } = env as Record<string, string | undefined>;
    if (key) expect(stderr).not.toContain(key);
  });

  it("exits 1 with one line when the queue is unreachable", async () => {
    const { code, stderr } = await runTool(["--strategy", "sha256"], {
      ...ENV, AWS_REGION: "us-east-1", AWS_ACCESS_KEY_ID: "x", AWS_SECRET_ACCESS_KEY: "y", AWS_MAX_ATTEMPTS: "1",
      QUEUE_URL: "http://127.0.0.1:9/000000000000/nowhere",
    });
    expect(code).toBe(1);
    expect(stderr).toMatch(/^error: Cannot use --queue-url http:\/\/127\.0\.0\.1:9\/000000000000\/nowhere: endpoint unreachable \(ECONNREFUSED\)/);
    expect(stderr.trim().split("\n")).toHaveLength(1);
  });

  it("exits 2 when no AWS region is set", async () => {
    const { code, stderr } = await runTool(["--strategy", "sha256"], { ...ENV, AWS_ACCESS_KEY_ID: "x", AWS_SECRET_ACCESS_KEY: "y", AWS_CONFIG_FILE: "/nonexistent" });
    expect(code).toBe(2);
    expect(stderr).toBe("error: AWS region is not set: set AWS_REGION (or a region in your AWS profile)\n");
  });
});
