/**
 * One classify per service, by class and code: the SDK's exception classes and AWS's codes
 * for SQS; Slonik's classes, our own and SQLSTATEs for Postgres. Built from real instances,
 * no service needed. A name or a message that merely looks right is not enough.
 */
import { existsSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import {
  InvalidSecurity,
  OverLimit,
  QueueDoesNotExist,
  ReceiveMessageCommand,
  RequestThrottled,
  SQSClient,
  SQSServiceException,
} from "@aws-sdk/client-sqs";
import {
  BackendTerminatedUnexpectedlyError,
  ConnectionError,
  IdleTransactionTimeoutError,
  InvalidInputError,
  StatementCancelledError,
  StatementTimeoutError,
} from "slonik";
import { describe, expect, it } from "vitest";
import { DatabaseCallAbandonedError } from "../../src/database.ts";
import { classifyDatabaseError } from "../../src/postgres-errors.ts";
import { ROOT } from "../helpers.ts";
import { boundedSqsCall, classifySqsError, describeSqsError, SqsDeadlineError } from "../../src/sqs.ts";

const metadata = (httpStatusCode: number) => ({ $metadata: { httpStatusCode } });
/** An error as Postgres sends it through pg: a SQLSTATE in `code`. */
const pgError = (code: string, message = "the server said so") => Object.assign(new Error(message), { code });

describe("classifySqsError", () => {
  it("waits out SQS's own throttling and in-flight limit, by class", () => {
    expect(classifySqsError(new RequestThrottled({ message: "slow down", ...metadata(400) }))).toBe("transient");
    expect(classifySqsError(new OverLimit({ message: "too many in flight", ...metadata(403) }))).toBe("transient");
  });

  it("waits out a server fault, a 5xx and AWS's common throttling code, stops on a client fault", () => {
    const exception = (name: string, $fault: "client" | "server", status: number) =>
      new SQSServiceException({ name, $fault, message: name, ...metadata(status) });
    expect(classifySqsError(exception("InternalError", "server", 500))).toBe("transient");
    expect(classifySqsError(exception("Whatever", "client", 503))).toBe("transient");
    expect(classifySqsError(exception("ThrottlingException", "client", 400))).toBe("transient");
    expect(classifySqsError(exception("AccessDenied", "client", 403))).toBe("fatal");
  });

  it("stops on a queue that does not exist, and says so", () => {
    const error = new QueueDoesNotExist({ message: "The specified queue does not exist.", ...metadata(400) });
    expect(classifySqsError(error)).toBe("fatal");
    expect(describeSqsError(error)).toBe("queue does not exist (check the URL and region)");
    expect(describeSqsError(new InvalidSecurity({ message: "no", ...metadata(403) }))).toMatch(/^access denied/);
  });

  it("waits out its own deadline by class: the error no longer poses as the SDK's TimeoutError", async () => {
    const never = (options: { abortSignal: AbortSignal }) =>
      new Promise<never>((_, reject) =>
        options.abortSignal.addEventListener("abort", () => reject(new Error("aborted")))
      );
    const error = await boundedSqsCall(never, 20).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SqsDeadlineError);
    expect((error as Error).name).toBe("SqsDeadlineError");
    expect(classifySqsError(error)).toBe("transient");
  });

  it("waits out a 5xx the SDK could not even parse (a proxy's error page)", () => {
    expect(classifySqsError(Object.assign(new SyntaxError("Unexpected token '<'"), metadata(502)))).toBe("transient");
  });

  it("waits out a network fault by Node's code, and does not take a look-alike name for a class", () => {
    expect(classifySqsError(Object.assign(new Error("socket hang up"), { code: "ECONNRESET" }))).toBe("transient");
    expect(classifySqsError(Object.assign(new Error("slow down"), { name: "RequestThrottled" }))).toBe("fatal");
  });
});

/**
 * The error the real SDK makes of an error response as SQS sends it: JSON with its
 * `__type`, and, as SQS does for its old query protocol's clients, `x-amzn-query-error`.
 */
async function sdkErrorFor(status: number, type: string, queryCompatible: boolean): Promise<unknown> {
  const server = createServer((req, res) => {
    req.resume().on("end", () => {
      res.writeHead(status, {
        "content-type": "application/x-amz-json-1.0",
        ...(queryCompatible ? { "x-amzn-query-error": `AWS.SimpleQueueService.${type};Sender` } : {}),
      });
      res.end(JSON.stringify({ __type: `com.amazonaws.sqs#${type}`, message: "as SQS says it" }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const sqs = new SQSClient({
    endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
    maxAttempts: 1,
  });
  try {
    return await sqs.send(new ReceiveMessageCommand({ QueueUrl: `${endpoint}/000000000000/q` })).catch((e: unknown) =>
      e
    );
  } finally {
    sqs.destroy();
    server.close();
  }
}

describe("classifySqsError on what the SDK makes of SQS's answers", () => {
  it("waits out the in-flight limit and throttling whether or not SQS adds its query-protocol code", async () => {
    for (const queryCompatible of [false, true]) {
      expect(classifySqsError(await sdkErrorFor(403, "OverLimit", queryCompatible))).toBe("transient");
      expect(classifySqsError(await sdkErrorFor(400, "RequestThrottled", queryCompatible))).toBe("transient");
    }
    // With the header, the SDK hands out no modelled class: the code decides.
    expect(await sdkErrorFor(403, "OverLimit", true)).not.toBeInstanceOf(OverLimit);
  });

  it("names a queue that does not exist, either way", async () => {
    for (const queryCompatible of [false, true]) {
      const error = await sdkErrorFor(400, "QueueDoesNotExist", queryCompatible);
      expect(classifySqsError(error)).toBe("fatal");
      expect(describeSqsError(error)).toBe("queue does not exist (check the URL and region)");
    }
  });
});

describe("classifyDatabaseError", () => {
  it("waits out Slonik's termination and statement errors by class, whatever their name", () => {
    class Renamed extends BackendTerminatedUnexpectedlyError {
      override name = "SomethingElse";
    }
    expect(classifyDatabaseError(new Renamed(new Error("gone")))).toBe("transient");
    expect(
      classifyDatabaseError(
        new StatementTimeoutError(pgError("57014", "canceling statement due to statement timeout")),
      ),
    )
      .toBe("transient");
    expect(
      classifyDatabaseError(new StatementCancelledError(pgError("57014", "canceling statement due to user request"))),
    )
      .toBe("transient");
    expect(classifyDatabaseError(new IdleTransactionTimeoutError(pgError("25P03", "idle-in-transaction timeout"))))
      .toBe("transient");
  });

  it("judges Slonik's ConnectionError by its cause: a lost connect waits, a refused login stops", () => {
    const wrap = (cause: Error) => new ConnectionError(cause.message, { cause });
    expect(classifyDatabaseError(wrap(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }))))
      .toBe("transient");
    expect(classifyDatabaseError(wrap(new Error("timeout expired")))).toBe("transient");
    expect(classifyDatabaseError(wrap(pgError("28P01", "password authentication failed")))).toBe("fatal");
    expect(classifyDatabaseError(wrap(new Error("SASL: client password must be a string")))).toBe("fatal");
    expect(classifyDatabaseError(new ConnectionError("no cause"))).toBe("fatal");
  });

  it("waits out our own calls given up on, by class", () => {
    expect(classifyDatabaseError(new DatabaseCallAbandonedError("no answer in 30 s"))).toBe("transient");
  });

  it("goes by SQLSTATE: contention and failover wait, data is the row's, the rest stops", () => {
    expect(classifyDatabaseError(pgError("55P03"))).toBe("transient");
    expect(classifyDatabaseError(pgError("25006"))).toBe("transient");
    expect(classifyDatabaseError(pgError("40001"))).toBe("transient");
    expect(classifyDatabaseError(pgError("23514"))).toBe("row");
    expect(classifyDatabaseError(pgError("42501"))).toBe("fatal");
    expect(classifyDatabaseError(pgError("42703"))).toBe("fatal");
  });

  it("stops on Slonik's InvalidInputError: it drops the 22P02 the table check compares", () => {
    expect(classifyDatabaseError(new InvalidInputError("invalid input syntax for type integer"))).toBe("fatal");
  });

  it("does not take a look-alike name or a server's words for a transient fault", () => {
    expect(classifyDatabaseError(Object.assign(new Error("refused"), { name: "BackendTerminatedError" }))).toBe(
      "fatal",
    );
    // A server's message quoting pg's words still has its code, which decides.
    expect(classifyDatabaseError(pgError("42501", "Connection terminated by policy"))).toBe("fatal");
    // pg's own, with no code: a connection that closed under the client.
    expect(classifyDatabaseError(new Error("Connection terminated unexpectedly"))).toBe("transient");
  });

  it("holds one copy of Slonik's error classes, which its pg driver throws: instanceof depends on it", () => {
    for (const nested of ["slonik", "@slonik/pg-driver"]) {
      expect(existsSync(join(ROOT, "node_modules", nested, "node_modules", "@slonik", "errors"))).toBe(false);
    }
  });
});
