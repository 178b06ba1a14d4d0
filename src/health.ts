/**
 * The health HTTP server: `GET /metrics` (Prometheus text), `/healthz` (200 while the
 * process runs) and `/readyz` (200 when Postgres and SQS answer, else 503 naming which
 * does not). Nothing it answers carries a message's content.
 *
 * @module
 */
import { createServer } from "node:http";
import { GetQueueAttributesCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { type DatabasePool, sql } from "slonik";
import { withDatabaseCallLimits } from "./database.ts";
import { FatalError } from "./errors.ts";
import { describeDatabaseError } from "./errors.ts";
import { boundedSqsCall, describeSqsError } from "./sqs.ts";
import { withTimeout } from "./timing.ts";

/** What `/readyz` checks; each check resolves or throws a one-line reason. */
export interface ReadinessChecks {
  postgres(): Promise<void>;
  sqs(): Promise<void>;
}

/** How long a readiness answer is reused: probes may come every second from many places. */
export const READY_CACHE_MS = 3_000;
const READY_CHECK_TIMEOUT_MS = 2_000;

/**
 * The readiness checks of a running tool: `SELECT 1` on the pool and `GetQueueAttributes`
 * on the queue, each bounded by a short timeout.
 */
export function createReadinessChecks(pool: DatabasePool, sqs: SQSClient, queueUrl: string): ReadinessChecks {
  return {
    async postgres() {
      try {
        // The call's own deadline closes a silent connection; the outer one covers the wait for a free one.
        await withTimeout(
          withDatabaseCallLimits({ deadlineMs: READY_CHECK_TIMEOUT_MS }, () => pool.query(sql.unsafe`SELECT 1`)),
          READY_CHECK_TIMEOUT_MS,
        );
      } catch (error) {
        throw new Error(describeDatabaseError(error));
      }
    },
    async sqs() {
      try {
        await boundedSqsCall(
          (options) =>
            sqs.send(new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ["QueueArn"] }), options),
          READY_CHECK_TIMEOUT_MS,
        );
      } catch (error) {
        throw new Error(describeSqsError(error));
      }
    },
  };
}

/** A running metrics server. */
export interface MetricsServer {
  port: number;
  close(): Promise<void>;
}

/**
 * Serve `GET /metrics` (Prometheus text), `/healthz` (200 while the process runs) and
 * `/readyz` (200 when Postgres and SQS answer, else 503 naming which does not; cached
 * for `READY_CACHE_MS`).
 *
 * @param port TCP port (0 picks a free one)
 * @param metrics the metrics text and its content type
 * @param checks what `/readyz` asks
 * @param host the address to listen on; every interface when undefined (what a container needs)
 */
export async function startMetricsServer(
  port: number,
  metrics: { render(): Promise<string>; contentType: string },
  checks: ReadinessChecks,
  host?: string,
): Promise<MetricsServer> {
  let cached: { at: number; answer: Promise<{ ok: boolean; text: string }> } | undefined;
  const readiness = () => {
    if (!cached || Date.now() - cached.at > READY_CACHE_MS) {
      const answer = Promise.allSettled([checks.postgres(), checks.sqs()]).then(([pg, queue]) => {
        const failures = [["postgres", pg], ["sqs", queue]]
          .filter(([, r]) => (r as PromiseSettledResult<void>).status === "rejected")
          .map(([name, r]) => `${name}: ${((r as PromiseRejectedResult).reason as Error).message}`);
        return { ok: failures.length === 0, text: failures.length === 0 ? "ready\n" : failures.join("\n") + "\n" };
      });
      cached = { at: Date.now(), answer };
    }
    return cached.answer;
  };
  const server = createServer((request, response) => {
    const path = (request.url ?? "/").split("?")[0];
    const reply = (status: number, text: string, type = "text/plain; charset=utf-8") => {
      response.writeHead(status, { "content-type": type }).end(text);
    };
    if (request.method !== "GET" && request.method !== "HEAD") return reply(405, "GET only\n");
    if (path === "/metrics") {
      void metrics.render().then((text) => reply(200, text, metrics.contentType), () => reply(500, "metrics failed\n"));
      return;
    }
    if (path === "/healthz") return reply(200, "ok\n");
    if (path === "/readyz") {
      void readiness().then(
        ({ ok, text }) => reply(ok ? 200 : 503, text),
        () => reply(503, "readiness check failed\n"),
      );
      return;
    }
    reply(404, "try /metrics, /healthz or /readyz\n");
  });
  await new Promise<void>((resolve, reject) => {
    server.once(
      "error",
      (error) =>
        reject(
          new FatalError(
            `Cannot serve metrics on ${host ?? "every interface"} port ${port}: ${(error as Error).message}`,
          ),
        ),
    );
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as { port: number }).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}
