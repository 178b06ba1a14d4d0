/**
 * Consume user-login events from an AWS SQS queue, validate them, mask their PII (`ip`,
 * `device_id`) with a pluggable strategy, and load them into Postgres (`user_logins`)
 * through Slonik. Run it, or use it as a library:
 *
 * ```sh
 * npx tsx mod.ts --queue-url https://sqs.us-east-1.amazonaws.com/123456789012/login-queue \
 *   --dlq-url https://sqs.us-east-1.amazonaws.com/123456789012/login-dlq --strategy hmac --drain
 * ```
 *
 * ```ts
 * import { createConsumer, createDatabasePool, createSqsClient, ensureSchema, loadStrategy } from "./mod.ts";
 *
 * const pool = await createDatabasePool(process.env.DATABASE_URL!);
 * await ensureSchema(pool);
 * const strategy = await loadStrategy("hmac", { env: process.env });
 * await ensureMaskRecord(pool, strategy); // one table, one mask: refuses another key
 * const consumer = createConsumer({ sqs: createSqsClient(), pool, strategy, queueUrl: process.env.QUEUE_URL!, drain: true });
 * console.log(await consumer.run());
 * ```
 *
 * Data flows one way: receive -> decode + validate -> mask -> batch -> insert (one
 * transaction, with the SQS message ids) -> delete from SQS. A message leaves the queue
 * only after its row is committed or it has been written to the dead-letter queue. The
 * exports below follow that flow; docs/architecture.md maps the files behind them.
 *
 * @module
 */
// First: under Deno, it says what permission is missing before the dependencies need it.
import { isMainModule } from "./src/runtime.ts";
import process from "node:process";
import { main } from "./src/main.ts";

// The public API: what a library user builds a consumer from, and the plugin contract.
// Everything else is the tool's own (docs/architecture.md); tests import it from src/.

// Configuration and errors
export { type Config, parseConfig, VERSION } from "./src/config.ts";
export { ConfigError, FatalError } from "./src/errors.ts";

// Messages and rows
export { canonicalIp } from "./src/ip.ts";
export {
  decodeAppVersion,
  type Decoded,
  decodeMessage,
  LoginMessage,
  type LoginRecord,
  UserLoginRow,
} from "./src/schema.ts";

// Masking: the plugin contract, and the registry behind it
export type { MaskedValue, MaskStrategy, PiiField, StrategyModule, StrategyOptions } from "./src/contract.ts";
export { keyFingerprint } from "./src/contract.ts";
export { loadStrategy, maskRecord, STRATEGY_NAMES } from "./src/masking.ts";

// The Postgres sink
export { createDatabasePool } from "./src/database.ts";
export { ensureSchema } from "./src/sink.ts";
export { ensureMaskRecord } from "./src/mask-record.ts";

// The SQS source, and the consumer that joins them
export { createSqsClient } from "./src/sqs.ts";
export { type ConsumerOptions, createConsumer } from "./src/pipeline.ts";
export type { Consumer, ConsumerObserver, ConsumerStats } from "./src/consumer/options.ts";

// Watching it run, and the command line
export { createLogger, type Logger } from "./src/log.ts";
export { main } from "./src/main.ts";

/** After main returns, what is still open (a half-open socket no goodbye closes) may hold the process this long. */
const EXIT_WAIT_MS = 2_000;

if (isMainModule(import.meta)) {
  const code = await main(process.argv.slice(2), process.env);
  process.exitCode = code;
  // Normally the process ends here by itself. A socket that never closes (its peer gone)
  // must not keep it: exit anyway, a moment later, without holding it open for that.
  const exitAnyway = setTimeout(() => process.exit(code), EXIT_WAIT_MS) as unknown;
  if (typeof exitAnyway === "number") {
    (globalThis as { Deno?: { unrefTimer(id: number): void } }).Deno?.unrefTimer(exitAnyway);
  } else (exitAnyway as { unref(): void }).unref();
}
