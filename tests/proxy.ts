/**
 * A TCP proxy a test can cut, stall and restore: the outage of a service without stopping
 * the shared one.
 *
 * - Cutting destroys every open connection and stops listening, so new connections are
 *   refused (ECONNREFUSED), as when the service is down.
 * - Stalling makes every connection, open or new, go silent: the proxy reads what the
 *   client sends and drops it, answers nothing, and does not close its side (a half-open
 *   connection after a NAT timeout or a failover, or a hung endpoint). When the stall ends,
 *   new connections are served again; the silent ones stay silent. A client that gives up
 *   on one and closes it closes the proxy's upstream connection too, so the server sees the
 *   client leave (and Postgres rolls its transaction back).
 */
import { connect, createServer, type Server, type Socket } from "node:net";
import { freePort } from "../scripts/embedded.ts";

export interface TcpProxy {
  port: number;
  /** Replace host:port of a URL with the proxy's. */
  via(url: string): string;
  /** Drop every connection and refuse new ones. */
  cut(): Promise<void>;
  /** Listen again on the same port. */
  restore(): Promise<void>;
  /** Silence every connection, open or new, for `ms`; then serve new connections again. */
  stall(ms: number): void;
  /** Whether a stall is on now. */
  readonly stalled: boolean;
  /**
   * Let the next `count` COMMITs through to the server, then drop the connection before its
   * answer reaches the client: the transaction committed, and the client cannot know it.
   */
  dropCommitAnswers(count: number): void;
  /** COMMIT answers dropped so far. */
  readonly droppedCommits: number;
  /** Connections accepted so far (to see that the tool came back through the proxy). */
  readonly accepted: number;
  close(): Promise<void>;
}

interface Pair {
  client: Socket;
  upstream?: Socket;
  silent: boolean;
}

/** Start a proxy on a free port forwarding to `target` (a URL or host:port). */
export async function startTcpProxy(target: string): Promise<TcpProxy> {
  const { hostname, port: targetPort } = new URL(target.includes("://") ? target : `tcp://${target}`);
  const port = await freePort();
  const pairs = new Set<Pair>();
  let server: Server | undefined;
  let accepted = 0;
  let stallTimer: ReturnType<typeof setTimeout> | undefined;
  let commitDrops = 0;
  let droppedCommits = 0;

  /** A simple-protocol query message ('Q') that commits. */
  function isCommit(chunk: Buffer): boolean {
    return chunk[0] === 0x51 && /^COMMIT\b/i.test(chunk.subarray(5).toString("latin1"));
  }

  /** After a COMMIT goes through, its answer is the last thing the server says on this connection. */
  function dropAnswer(pair: Pair, upstream: Socket): void {
    commitDrops--;
    droppedCommits++;
    upstream.unpipe(pair.client);
    upstream.once("data", () => {
      pair.client.destroy();
      upstream.destroy();
    });
    // Unpiped, the stream is paused: a new listener alone would not hear the answer.
    upstream.resume();
  }

  /** Stop forwarding both ways and drop whatever arrives; keep the client's socket open. */
  function silence(pair: Pair): void {
    if (pair.silent) return;
    pair.silent = true;
    pair.client.unpipe();
    pair.upstream?.unpipe();
    pair.client.resume();
    pair.upstream?.resume();
  }

  function listen(): Promise<void> {
    // allowHalfOpen: a silent connection must not answer a client's FIN with its own.
    server = createServer({ allowHalfOpen: true }, (client) => {
      accepted++;
      const pair: Pair = { client, silent: false };
      pairs.add(pair);
      client.on("error", () => {});
      const forget = () => {
        pairs.delete(pair);
        client.destroy();
        pair.upstream?.destroy();
      };
      // The client leaving ends the upstream connection, stalled or not; a silent
      // connection does not answer the client's FIN with its own.
      client.on("end", () => (pair.silent ? pair.upstream?.destroy() : forget()));
      client.on("close", forget);
      if (stallTimer !== undefined) {
        silence(pair);
        return;
      }
      const upstream = connect(Number(targetPort), hostname);
      pair.upstream = upstream;
      upstream.on("error", () => {});
      // The server leaving closes the client's connection, unless it is silent: a client of
      // a half-open connection hears nothing, not even that.
      upstream.on("close", () => {
        if (!pair.silent) forget();
      });
      upstream.on("end", () => {
        if (!pair.silent) forget();
      });
      client.on("data", (chunk: Buffer) => {
        if (commitDrops > 0 && !pair.silent && isCommit(chunk)) dropAnswer(pair, upstream);
      });
      client.pipe(upstream).pipe(client);
    });
    return new Promise((resolve, reject) => {
      server!.once("error", reject);
      server!.listen(port, "127.0.0.1", () => resolve());
    });
  }

  async function stopListening(): Promise<void> {
    clearTimeout(stallTimer);
    stallTimer = undefined;
    const s = server;
    server = undefined;
    for (const pair of pairs) {
      pair.client.destroy();
      pair.upstream?.destroy();
    }
    pairs.clear();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  await listen();
  return {
    port,
    via(url) {
      const parsed = new URL(url);
      parsed.hostname = "127.0.0.1";
      parsed.port = String(port);
      return parsed.toString();
    },
    cut: stopListening,
    async restore() {
      if (!server) await listen();
    },
    stall(ms) {
      for (const pair of pairs) silence(pair);
      clearTimeout(stallTimer);
      stallTimer = setTimeout(() => (stallTimer = undefined), ms);
    },
    get stalled() {
      return stallTimer !== undefined;
    },
    dropCommitAnswers(count) {
      commitDrops = count;
    },
    get droppedCommits() {
      return droppedCommits;
    },
    get accepted() {
      return accepted;
    },
    close: stopListening,
  };
}
