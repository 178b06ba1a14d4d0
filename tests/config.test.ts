/** Configuration: flags > environment > defaults, and one clear line with exit code 2. */
import { readFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { sql } from "slonik";
import { describe, expect, inject, it } from "vitest";
import { ConfigError, createDatabasePool, ensureSchema, parseConfig } from "../mod.ts";
import { DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY } from "../src/consumer/options.ts";
import { redactUrl } from "../src/errors.ts";
import { describeStartupError } from "../src/cli.ts";
import { SHA256_CAUTION } from "../strategies/sha256.ts";
import { withDatabase } from "../scripts/embedded.ts";
import { createFixture, ROOT, runTool } from "./helpers.ts";

const ENV = { QUEUE_URL: "http://127.0.0.1:4566/000000000000/q", DATABASE_URL: "postgres://u:secret@db:5432/x" };

describe("parseConfig", () => {
  it("applies defaults", () => {
    expect(parseConfig([], ENV)).toEqual({
      queueUrl: ENV.QUEUE_URL,
      dlqUrl: undefined,
      databaseUrl: ENV.DATABASE_URL,
      strategy: "hmac",
      drain: false,
      batchSize: DEFAULT_BATCH_SIZE,
      concurrency: DEFAULT_CONCURRENCY,
      logLevel: "info",
      logFormat: undefined,
      metricsPort: undefined,
      metricsHost: undefined,
      stopGraceSeconds: 20,
      batchDeadlineSeconds: 60,
      maxInFlightMb: 16,
      help: false,
      version: false,
    });
  });

  it("prefers flags to the environment", () => {
    const config = parseConfig(
      [
        "--queue-url",
        "https://sqs.eu-west-1.amazonaws.com/1/flag",
        "--strategy",
        "sha256",
        "--dlq-url",
        "http://h/dlq",
        "--database-url",
        "postgresql://flag/db",
        "--drain",
        "--batch-size",
        "50",
        "--concurrency",
        "3",
      ],
      { ...ENV, MASK_STRATEGY: "hmac", DLQ_URL: "http://h/env-dlq" },
    );
    expect(config).toMatchObject({
      queueUrl: "https://sqs.eu-west-1.amazonaws.com/1/flag",
      strategy: "sha256",
      dlqUrl: "http://h/dlq",
      databaseUrl: "postgresql://flag/db",
      drain: true,
      batchSize: 50,
      concurrency: 3,
    });
  });

  it("takes --metrics-port from the flag or METRICS_PORT", () => {
    expect(parseConfig(["--metrics-port", "9464"], { ...ENV, METRICS_PORT: "9000" }).metricsPort).toBe(9464);
    expect(parseConfig([], { ...ENV, METRICS_PORT: "9000" }).metricsPort).toBe(9000);
  });

  it("takes --metrics-host from the flag or METRICS_HOST; all interfaces when neither", () => {
    expect(parseConfig(["--metrics-host", "127.0.0.1"], { ...ENV, METRICS_HOST: "::1" }).metricsHost).toBe("127.0.0.1");
    expect(parseConfig([], { ...ENV, METRICS_HOST: "::1" }).metricsHost).toBe("::1");
    expect(parseConfig([], ENV).metricsHost).toBeUndefined();
  });

  it("takes the stop grace, batch deadline and in-flight bound from flags or the environment", () => {
    expect(parseConfig(["--stop-grace", "5", "--batch-deadline", "30", "--max-in-flight-mb", "16"], ENV))
      .toMatchObject({ stopGraceSeconds: 5, batchDeadlineSeconds: 30, maxInFlightMb: 16 });
    expect(parseConfig([], { ...ENV, STOP_GRACE_SECONDS: "7", BATCH_DEADLINE_SECONDS: "90", MAX_IN_FLIGHT_MB: "128" }))
      .toMatchObject({ stopGraceSeconds: 7, batchDeadlineSeconds: 90, maxInFlightMb: 128 });
  });

  it("takes every setting from its flag or its variable, as the settings table says", () => {
    expect(parseConfig([], { ...ENV, BATCH_SIZE: "7", CONCURRENCY: "3" })).toMatchObject({
      batchSize: 7,
      concurrency: 3,
    });
    expect(parseConfig(["--batch-size", "9"], { ...ENV, BATCH_SIZE: "7" })).toMatchObject({ batchSize: 9 });
    expect(() => parseConfig([], { ...ENV, CONCURRENCY: "0" })).toThrow(
      new ConfigError('CONCURRENCY must be a whole number from 1 to 64, got "0"'),
    );
  });

  it("takes --log-format from the flag or LOG_FORMAT, json or pretty; the terminal decides when neither", () => {
    expect(parseConfig(["--log-format", "json"], { ...ENV, LOG_FORMAT: "pretty" }).logFormat).toBe("json");
    expect(parseConfig([], { ...ENV, LOG_FORMAT: "pretty" }).logFormat).toBe("pretty");
    expect(parseConfig([], ENV).logFormat).toBeUndefined();
    expect(() => parseConfig([], { ...ENV, LOG_FORMAT: "text" })).toThrow(
      new ConfigError('LOG_FORMAT must be one of json, pretty, got "text"'),
    );
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
    [
      ["--dlq-url", ENV.QUEUE_URL],
      ENV,
      "--dlq-url is the same queue as QUEUE_URL: invalid messages would come straight back",
    ],
    [["--log-level", "loud"], ENV, '--log-level must be one of debug, info, warn, error, silent, got "loud"'],
    [["--metrics-port", "70000"], ENV, '--metrics-port must be a whole number from 1 to 65535, got "70000"'],
  ])("refuses %j with %j", (argv, env, message) => {
    expect(() => parseConfig(argv, env)).toThrow(new ConfigError(message));
  });

  it.each([
    [{ METRICS_PORT: "abc" }, 'METRICS_PORT must be a whole number from 1 to 65535, got "abc"'],
    [{ LOG_LEVEL: "loud" }, 'LOG_LEVEL must be one of debug, info, warn, error, silent, got "loud"'],
    [{ STOP_GRACE_SECONDS: "-1" }, 'STOP_GRACE_SECONDS must be a whole number from 0 to 3600, got "-1"'],
    [{ MAX_IN_FLIGHT_MB: "0" }, 'MAX_IN_FLIGHT_MB must be a whole number from 1 to 65536, got "0"'],
    [{ QUEUE_URL: "not a url" }, "QUEUE_URL is not a URL: expected http://..."],
    [{ DATABASE_URL: "mysql://x/y" }, "DATABASE_URL must start with postgres: or postgresql://, got mysql://"],
    [{ DLQ_URL: ENV.QUEUE_URL }, "DLQ_URL is the same queue as QUEUE_URL: invalid messages would come straight back"],
  ])("names the environment variable %j, not the flag, when it is wrong", (env, message) => {
    expect(() => parseConfig([], { ...ENV, ...env })).toThrow(new ConfigError(message));
  });

  it("explains how to write a password with # / ? or % in a URL, and never echoes it", () => {
    for (const url of ["postgres://u:pa#ss@db/x", "postgres://u:pa/ss@db/x", "postgres://u:pa?ss@db/x"]) {
      let message = "";
      try {
        parseConfig([], { ...ENV, DATABASE_URL: url });
      } catch (error) {
        message = (error as Error).message;
      }
      expect(message).toMatch(/^DATABASE_URL is not a URL: .*percent-encode/);
      expect(message).toContain("%23");
      expect(message).not.toContain("ss@db");
    }
  });

  it("refuses an unknown flag and points to --help", () => {
    expect(() => parseConfig(["--queue", "x"], ENV)).toThrow(
      /Unknown option '--queue'; run with --help to see the flags/,
    );
  });

  it("hides the password of a URL it prints", () => {
    expect(redactUrl(ENV.DATABASE_URL)).toBe("postgres://u:***@db:5432/x");
  });

  it.each([
    ["postgres://u@db/x?password=hunter2", "postgres://u@db/x?password=***"],
    [
      "postgres://u:pw@db/x?sslpassword=hunter2&application_name=loader",
      "postgres://u:***@db/x?sslpassword=***&application_name=loader",
    ],
    ["http://AKIDEXAMPLE:hunter2@localhost:4566", "http://AKIDEXAMPLE:***@localhost:4566/"],
    [
      "https://sqs.example/q?X-Amz-Signature=hunter2&X-Amz-Credential=hunter2&X-Amz-Security-Token=hunter2",
      "https://sqs.example/q?X-Amz-Signature=***&X-Amz-Credential=***&X-Amz-Security-Token=***",
    ],
    ["postgres://u:hun#ter2@db/x", "(a URL that does not parse)"],
  ])("redacts every secret-bearing part of %s", (raw, shown) => {
    expect(redactUrl(raw)).toBe(shown);
    expect(redactUrl(raw)).not.toContain("hunter2");
  });
});

describe("the command line", () => {
  it("prints help with the flags and why sha256 is weak", async () => {
    const { code, stdout } = await runTool(["--help"], {});
    expect(code).toBe(0);
    for (
      const flag of [
        "--queue-url",
        "--dlq-url",
        "--database-url",
        "--strategy",
        "--drain",
        "--batch-size",
        "--concurrency",
        "--metrics-port",
      ]
    ) {
      expect(stdout).toContain(flag);
    }
    expect(stdout).toMatch(/2\^32/);
  });

  it("warns at start that sha256 is reversible by enumeration, and loads anyway", async () => {
    const f = await createFixture();
    try {
      const run = await runTool(["--drain", "--strategy", "sha256"], f.env);
      expect(run.code).toBe(0);
      const warnings = run.stderr.split("\n").filter(Boolean).map((line) => JSON.parse(line))
        .filter((entry) => entry.level === "warn" && entry.strategy === "sha256");
      expect(warnings).toEqual([expect.objectContaining({ msg: SHA256_CAUTION })]);
    } finally {
      await f.close();
    }
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
    [
      ["--strategy", "md5"],
      ENV,
      /^error: Unknown strategy "md5": use one of hmac, sha256, vault, ipcrypt, ipcrypt-pfx, or a path to your own module\n$/,
    ],
    [[], ENV, /^error: MASK_HMAC_KEY is not set: the hmac strategy needs a secret of at least 32 bytes/],
    [
      ["--strategy", "tests/fixtures/not-a-strategy.ts"],
      ENV,
      /^error: Strategy module tests\/fixtures\/not-a-strategy.ts does not export create\(options\)/,
    ],
    [
      ["--strategy", "ipcrypt"],
      { ...ENV, MASK_IPCRYPT_KEY: "c0ffee" },
      /^error: MASK_IPCRYPT_KEY is 3 bytes; ipcrypt-deterministic needs exactly 16/,
    ],
    [
      ["--strategy", "ipcrypt-pfx"],
      { ...ENV, MASK_IPCRYPT_KEY: "0f".repeat(31) + "xx" },
      /^error: MASK_IPCRYPT_KEY is not hex: ipcrypt-pfx needs 64 hex digits/,
    ],
    [
      ["--strategy", "ipcrypt-pfx"],
      { ...ENV, MASK_IPCRYPT_KEY: "5e".repeat(32) },
      /^error: MASK_IPCRYPT_KEY's two 16-byte halves are equal/,
    ],
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
      ...ENV,
      AWS_REGION: "us-east-1",
      AWS_ACCESS_KEY_ID: "x",
      AWS_SECRET_ACCESS_KEY: "y",
      AWS_MAX_ATTEMPTS: "1",
      QUEUE_URL: "http://127.0.0.1:9/000000000000/nowhere",
    });
    expect(code).toBe(1);
    expect(stderr).toMatch(
      /^error: Cannot use --queue-url http:\/\/127\.0\.0\.1:9\/000000000000\/nowhere: endpoint unreachable \(ECONNREFUSED\)/,
    );
    expect(stderr.trim().split("\n")).toHaveLength(1);
  });

  it("prints no credential of AWS_ENDPOINT_URL when the endpoint is unreachable", async () => {
    const { code, stderr } = await runTool(["--strategy", "sha256"], {
      ...ENV,
      AWS_REGION: "us-east-1",
      AWS_ACCESS_KEY_ID: "x",
      AWS_SECRET_ACCESS_KEY: "y",
      AWS_MAX_ATTEMPTS: "1",
      AWS_ENDPOINT_URL: "http://proxyuser:hunter2@127.0.0.1:9",
      QUEUE_URL: "http://127.0.0.1:9/000000000000/nowhere",
    });
    expect(code).toBe(1);
    expect(stderr).toContain("AWS_ENDPOINT_URL=http://proxyuser:***@127.0.0.1:9/");
    expect(stderr).not.toContain("hunter2");
  });

  it("never echoes a rejected VAULT_RECOVERY_PUBLIC_KEY, nor a variable of the single-key vault", async () => {
    const bad = await runTool(["--strategy", "vault"], {
      ...ENV,
      VAULT_TOKEN_KEY: "v".repeat(40),
      VAULT_RECOVERY_PUBLIC_KEY: "hunter2-key-material",
    });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^error: VAULT_RECOVERY_PUBLIC_KEY is not a key of sqs-login-masker vault-keygen/);
    expect(bad.stderr).not.toContain("hunter2");
    const old = await runTool(["--strategy", "vault"], { ...ENV, VAULT_KEY: "hunter2".repeat(6) });
    expect(old.code).toBe(2);
    expect(old.stderr).toBe(
      "error: VAULT_KEY belongs to the single-key vault this version replaced: remove it, and set VAULT_TOKEN_KEY and the recovery key pair of sqs-login-masker vault-keygen (docs/vault.md)\n",
    );
  });

  it("exits 2 when no AWS region is set", async () => {
    const { code, stderr } = await runTool(["--strategy", "sha256"], {
      ...ENV,
      AWS_ACCESS_KEY_ID: "x",
      AWS_SECRET_ACCESS_KEY: "y",
      AWS_CONFIG_FILE: "/nonexistent",
    });
    expect(code).toBe(2);
    expect(stderr).toBe("error: AWS region is not set: set AWS_REGION (or a region in your AWS profile)\n");
  });
});

/** A server that asks for a SCRAM password, as Postgres does for a role that has one. */
async function scramServer(): Promise<Server> {
  const message = (code: number, data: string) => {
    const body = Buffer.from(data);
    const out = Buffer.alloc(9 + body.length);
    out.write("R", 0);
    out.writeInt32BE(8 + body.length, 1);
    out.writeInt32BE(code, 5);
    body.copy(out, 9);
    return out;
  };
  const server = createServer((socket) => {
    socket.on("error", () => {});
    // The start-up packet: AuthenticationSASL; the client's first SCRAM message: SASLContinue.
    socket.once("data", () => {
      socket.write(message(10, "SCRAM-SHA-256\0\0"));
      socket.once("data", () => socket.write(message(11, "r=nonce,s=c2FsdA==,i=4096")));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  return server;
}

/** What the tool says when it cannot start on a database URL: the one line, after connecting. */
async function startupError(url: string): Promise<string> {
  let pool;
  try {
    pool = await createDatabasePool(url);
    await ensureSchema(pool);
  } catch (error) {
    return describeStartupError(error, url);
  } finally {
    await pool?.end();
  }
  throw new Error("expected the start-up to fail");
}

describe("start-up errors with the hint that fixes them", () => {
  it("a SCRAM login without a password: where to put it", async () => {
    const server = await scramServer();
    try {
      const { port } = server.address() as { port: number };
      for (
        const url of [
          `postgres://loader@127.0.0.1:${port}/db`,
          `postgres://loader@127.0.0.1:${port}/db?password=hunter2`,
        ]
      ) {
        const line = await startupError(url);
        expect(line).toMatch(
          /asks for a password and none was given: put it in the URL \(postgres:\/\/user:PASSWORD@host\/db, percent-encoded\) or set PGPASSWORD/,
        );
        expect(line).not.toContain("hunter2");
      }
      expect(await startupError(`postgres://loader@127.0.0.1:${port}/db?password=hunter2`)).toContain(
        "(a ?password= parameter is not read)",
      );
    } finally {
      server.close();
    }
  });

  it("a database that does not exist (3D000): how to create it", async () => {
    const line = await startupError(withDatabase(inject("postgresUrl"), "no_such_database_11"));
    expect(line).toMatch(
      /^Database no_such_database_11 does not exist at .*: create it \(CREATE DATABASE no_such_database_11\) or fix the name in the URL/,
    );
  });

  it("a query parameter the client does not take: which, and what it takes", async () => {
    const line = await startupError(withDatabase(inject("postgresUrl"), "x") + "?sslmode=verify-full");
    expect(line).toBe(
      "The URL's sslmode parameter is not one the Postgres client takes: it takes disable, no-verify, require (check --database-url)",
    );
  });

  it("a port where something else answers: check the port", async () => {
    // The SQS emulator speaks HTTP, not Postgres.
    const { port } = new URL(inject("sqsEndpoint"));
    const line = await startupError(`postgres://loader:pw@127.0.0.1:${port}/db`);
    expect(line).toMatch(
      /^Something at postgres:\/\/loader:\*\*\*@127\.0\.0\.1:\d+\/db hung up without speaking Postgres: is the port right\? \(Postgres listens on 5432 unless told otherwise/,
    );
  });

  it("a password with @ needs no escaping: the URL's last @ ends it", async () => {
    const f = await createFixture();
    const role = `at_sign_${Date.now()}`;
    try {
      await f.pool.query(sql.unsafe`CREATE ROLE ${sql.identifier([role])} LOGIN PASSWORD 'p@ss-word'`);
      const url = new URL(f.databaseUrl);
      const pool = await createDatabasePool(`postgres://${role}:p@ss-word@${url.host}${url.pathname}`);
      expect(await pool.oneFirst(sql.unsafe`SELECT current_user::text`)).toBe(role);
      await pool.end();
    } finally {
      await f.pool.query(sql.unsafe`DROP ROLE IF EXISTS ${sql.identifier([role])}`);
      await f.close();
    }
  });
});
