/**
 * An HTTP proxy in front of the SQS emulator that answers a chosen action with SQS's
 * throttling errors for a number of calls, then forwards again: the emulator itself never
 * throttles. Speaks what the SDK sends (AWS JSON 1.0, the action in `X-Amz-Target`).
 */
import { createServer, request, type Server } from "node:http";
import { freePort } from "../scripts/embedded.ts";

/** An SQS error as the JSON protocol carries it: its HTTP status and `__type`. */
export interface SqsFault {
  status: number;
  type: string;
}

export const THROTTLING: SqsFault = { status: 400, type: "ThrottlingException" };
export const OVER_LIMIT: SqsFault = { status: 403, type: "OverLimit" };
export const REQUEST_THROTTLED: SqsFault = { status: 400, type: "RequestThrottled" };

export interface SqsFaultProxy {
  /** Replace host:port of a URL with the proxy's. */
  via(url: string): string;
  /** Answer the next `count` calls of `action` (e.g. `ReceiveMessage`) with the faults, in turn. */
  fail(action: string, count: number, faults: readonly SqsFault[]): void;
  /** Faulted answers given so far. */
  readonly faulted: number;
  close(): Promise<void>;
}

export async function startSqsFaultProxy(target: string): Promise<SqsFaultProxy> {
  const upstream = new URL(target);
  const port = await freePort();
  let plan: { action: string; left: number; faults: readonly SqsFault[] } | undefined;
  let faulted = 0;
  const server: Server = createServer((req, res) => {
    const action = String(req.headers["x-amz-target"] ?? "").split(".").pop();
    if (plan && plan.left > 0 && action === plan.action) {
      const fault = plan.faults[faulted % plan.faults.length]!;
      plan.left--;
      faulted++;
      req.resume();
      res.writeHead(fault.status, {
        "content-type": "application/x-amz-json-1.0",
        "x-amzn-query-error": `AWS.SimpleQueueService.${fault.type};Sender`,
      });
      res.end(JSON.stringify({ __type: `com.amazonaws.sqs#${fault.type}`, message: "Rate exceeded (test proxy)" }));
      return;
    }
    const forward = request({
      host: upstream.hostname,
      port: upstream.port,
      method: req.method,
      path: req.url,
      headers: req.headers,
    }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    forward.on("error", () => res.destroy());
    req.pipe(forward);
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return {
    via(url) {
      const u = new URL(url);
      u.hostname = "127.0.0.1";
      u.port = String(port);
      return u.toString().replace(/\/$/, url.endsWith("/") ? "/" : "");
    },
    fail(action, count, faults) {
      plan = { action, left: count, faults };
    },
    get faulted() {
      return faulted;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
