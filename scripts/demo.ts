/**
 * `npm start`: the whole pipeline on embedded services, on a machine with none.
 *
 * Starts the fauxqs SQS emulator and an embedded Postgres on free ports, creates
 * `login-queue`, its DLQ and the table, sends about 100 sample logins (some malformed),
 * drains them through the real consumer with the `hmac` strategy, prints a summary and a
 * few masked rows, and stops everything.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import { sql } from "slonik";
import {
  createConsumer,
  createDatabasePool,
  createLogger,
  ensureMaskRecord,
  ensureSchema,
  formatSummary,
  loadStrategy,
  sqlUserLoginRow,
} from "../mod.ts";
import { parseFlags } from "../src/config.ts";
import { readQueueDepth } from "../src/sqs.ts";
import { runScript } from "./_command.ts";
import { emulatorClient, startBoth, startSqsEmulator, usePostgres } from "./embedded.ts";
import { sampleBodies, sendBodies } from "./produce.ts";

const MESSAGES = 100;

const HELP = `Usage: npx tsx scripts/demo.ts      (or: npm start, deno task start)

The whole pipeline on a machine with no services: starts the fauxqs SQS emulator and an
embedded Postgres on free ports (never a server you run), sends ${MESSAGES} sample logins (about
10% malformed), drains them with the hmac strategy under a fresh random key, prints a
summary and a few masked rows, and removes everything it made.

  -h, --help   show this help

Exit codes: 0 done, 1 a service did not start or the run failed, 2 a bad flag.
`;

async function main(argv: readonly string[]): Promise<number> {
  if (parseFlags(argv, { help: { type: "boolean", short: "h" } }).help) {
    process.stdout.write(HELP);
    return 0;
  }
  const started = Date.now();
  const say = (line: string) => process.stdout.write(line + "\n");
  say("Starting the SQS emulator and Postgres on free ports...");
  const [sqsEmulator, postgres] = await startBoth(startSqsEmulator(), usePostgres({}));
  const sqs = emulatorClient(sqsEmulator.endpoint);
  const pool = await createDatabasePool(await postgres.createDatabase("login_demo"));
  try {
    const queueUrl = await sqsEmulator.createQueue("login-queue");
    const dlqUrl = await sqsEmulator.createQueue("login-queue-dlq");
    await ensureSchema(pool);
    const bodies = sampleBodies(MESSAGES, 0.1, 7);
    await sendBodies(sqs, queueUrl, bodies);
    say(`SQS ${sqsEmulator.endpoint}  Postgres ${postgres.embedded ? "embedded" : "DATABASE_URL"}`);
    say(`Sent ${bodies.length} login messages (about 10% malformed) to login-queue.\n`);

    // A fresh random key per demo run: no secret lives in the code.
    const strategy = await loadStrategy("hmac", { env: { MASK_HMAC_KEY: randomBytes(32).toString("hex") } });
    await ensureMaskRecord(pool, strategy);
    const consumer = createConsumer({
      sqs,
      pool,
      strategy,
      queueUrl,
      dlqUrl,
      drain: true,
      logger: createLogger({ level: "warn", pretty: true }),
    });
    const stats = await consumer.run();

    const rows = await pool.any(sqlUserLoginRow`
      SELECT user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date::text
      FROM user_logins ORDER BY user_id LIMIT 5`);
    const dlq = await readQueueDepth(sqs, dlqUrl);
    const total = await pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM user_logins`);

    say(`Summary: ${formatSummary(stats)}`);
    say(
      `user_logins holds ${total} rows; login-queue-dlq holds ${dlq.visible} messages.\n`,
    );
    say("A few rows (ip and device_id masked with HMAC-SHA-256):");
    for (const row of rows) {
      say(
        `  ${row.user_id.slice(0, 13)}…  ${row.device_type.padEnd(8)} ip=${row.masked_ip.slice(0, 16)}…  ` +
          `device=${row.masked_device_id.slice(0, 16)}…  locale=${
            row.locale ?? "null"
          }  app_version=${row.app_version}  ${row.create_date}`,
      );
    }
    say(`\nDone in ${((Date.now() - started) / 1000).toFixed(1)} s. Everything was temporary and is gone now.`);
    return 0;
  } finally {
    await pool.end();
    sqs.destroy();
    await Promise.all([sqsEmulator.stop(), postgres.stop()]);
  }
}

process.exitCode = await runScript(() => main(process.argv.slice(2)));
