/**
 * A TCP proxy that delays every chunk by half a round trip each way: the bench's stand-in
 * for a remote queue (`--latency-ms 10` ≈ an SQS endpoint 10 ms away). Chunks keep their
 * order: Node fires timers of one duration in the order they were set.
 *
 * @module
 */
import { createConnection, createServer, type Server, type Socket } from "node:net";

export interface LatencyProxy {
  /** The emulator's endpoint, through the proxy. */
  endpoint: string;
  close(): Promise<void>;
}

/** Forward `from` to `to`, each chunk and the end `delayMs` late. */
function forwardLate(from: Socket, to: Socket, delayMs: number): void {
  from.on("data", (chunk) => setTimeout(() => to.writable && to.write(chunk), delayMs));
  from.on("end", () => setTimeout(() => to.end(), delayMs));
  from.on("error", () => to.destroy());
  from.on("close", () => setTimeout(() => to.destroy(), delayMs));
}

/**
 * Start a proxy in front of `endpoint` (http://host:port) adding `roundTripMs` to every
 * request and answer pair.
 */
export async function startLatencyProxy(endpoint: string, roundTripMs: number): Promise<LatencyProxy> {
  const target = new URL(endpoint);
  const oneWayMs = roundTripMs / 2;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = createConnection({ host: target.hostname, port: Number(target.port) });
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
    }
    forwardLate(client, upstream, oneWayMs);
    forwardLate(upstream, client, oneWayMs);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return {
    endpoint: `${target.protocol}//127.0.0.1:${port}`,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
