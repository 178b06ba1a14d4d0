/**
 * A TCP proxy a test can cut and restore: the outage of a service without stopping the
 * shared one. Cutting destroys every open connection and stops listening, so new
 * connections are refused (ECONNREFUSED), as when the service is down.
 */
import { createServer, connect, type Server, type Socket } from "node:net";
import { freePort } from "../scripts/embedded.ts";

export interface TcpProxy {
  port: number;
  /** Replace host:port of a URL with the proxy's. */
  via(url: string): string;
  /** Drop every connection and refuse new ones. */
  cut(): Promise<void>;
  /** Listen again on the same port. */
  restore(): Promise<void>;
  /** Connections accepted so far (to see that the tool came back through the proxy). */
  readonly accepted: number;
  close(): Promise<void>;
}

/** Start a proxy on a free port forwarding to `target` (a URL or host:port). */
export async function startTcpProxy(target: string): Promise<TcpProxy> {
  const { hostname, port: targetPort } = new URL(target.includes("://") ? target : `tcp://${target}`);
  const port = await freePort();
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  let accepted = 0;

  function listen(): Promise<void> {
    server = createServer((client) => {
      accepted++;
      const upstream = connect(Number(targetPort), hostname);
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on("error", () => {});
        s.on("close", () => {
          sockets.delete(s);
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream).pipe(client);
    });
    return new Promise((resolve, reject) => {
      server!.once("error", reject);
      server!.listen(port, "127.0.0.1", () => resolve());
    });
  }

  async function stopListening(): Promise<void> {
    const s = server;
    server = undefined;
    for (const socket of sockets) socket.destroy();
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
    get accepted() {
      return accepted;
    },
    close: stopListening,
  };
}
