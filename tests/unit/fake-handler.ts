/**
 * A batch handler for the consumer's unit tests: bodies are `{"id": "..."}`, anything else
 * is invalid; a batch is written into a map keyed by id, so a redelivery is a duplicate.
 * Tests steer it: a write may wait, fail with a transient or fatal error, refuse some ids,
 * or hang until its signal aborts.
 */
import { FatalError } from "../../src/errors.ts";
import type { BatchHandler, BatchOutcome } from "../../src/consumer/port.ts";

export class TransientFault extends Error {
  override name = "TransientFault";
}

export interface FakeHandler extends BatchHandler<string> {
  /** Ids written, each once, in the order they were written. */
  readonly written: string[];
  /** The ids of each batch, as prepared. */
  readonly batches: string[][];
  /** Writes made, retries included. */
  writes: number;
  /** How long each write takes. */
  writeMs: number;
  /** The next writes throw this many transient faults. */
  transientFaults: number;
  /** The next write throws this, which waiting cannot fix. */
  fatalFault?: Error;
  /** Writes hang until their signal aborts. */
  hang: boolean;
  /** Ids the sink refuses for their data. */
  readonly refuse: Set<string>;
  /** Called as each batch is prepared: a test looks at the consumer then. */
  onPrepare?(ids: readonly string[]): void;
  /** Probes made while writes failed. */
  probes: number;
}

function wait(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(new TransientFault("abandoned"));
    }, { once: true });
  });
}

export function createFakeHandler(): FakeHandler {
  const stored = new Set<string>();
  const handler: FakeHandler = {
    service: "fake",
    serviceName: "Fake",
    written: [],
    batches: [],
    writes: 0,
    writeMs: 0,
    transientFaults: 0,
    hang: false,
    refuse: new Set(),
    probes: 0,
    decode(message) {
      try {
        const id = (JSON.parse(message.Body ?? "") as { id?: unknown }).id;
        if (typeof id === "string") return { ok: true, value: id };
      } catch {
        // An invalid body, like any other.
      }
      return { ok: false, reason: "body: not {id}" };
    },
    prepare(ids) {
      handler.batches.push([...ids]);
      handler.onPrepare?.(ids);
      return Promise.resolve({
        async write(signal): Promise<BatchOutcome> {
          handler.writes++;
          if (handler.hang) await wait(3_600_000, signal);
          if (handler.writeMs > 0) await wait(handler.writeMs, signal);
          if (handler.fatalFault) throw handler.fatalFault;
          if (handler.transientFaults > 0) {
            handler.transientFaults--;
            throw new TransientFault("the sink is down");
          }
          let loaded = 0;
          const refused: BatchOutcome["refused"][number][] = [];
          ids.forEach((id, index) => {
            if (handler.refuse.has(id)) return void refused.push({ index, reason: `refused: id ${index}` });
            if (stored.has(id)) return;
            stored.add(id);
            handler.written.push(id);
            loaded++;
          });
          return { loaded, duplicates: ids.length - loaded - refused.length, refused };
        },
      });
    },
    classify: (error) => error instanceof TransientFault ? "transient" : "fatal",
    describe: (error) => (error as Error).message,
    fatal: (error) => error instanceof FatalError ? error : new FatalError(`Fake refused: ${(error as Error).message}`),
    probe() {
      handler.probes++;
      return handler.transientFaults > 0 ? Promise.reject(new TransientFault("still down")) : Promise.resolve();
    },
  };
  return handler;
}
