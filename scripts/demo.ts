/**
 * `npm start`: the whole pipeline on embedded services, on a machine with none.
 *
 * Starts the fauxqs SQS emulator and an embedded Postgres on free ports, creates
 * `login-queue`, its DLQ and the table, sends about 100 sample logins (some malformed),
 * drains them through the real consumer with the strategy asked for (`hmac` by default,
 * under fresh random keys), prints a summary and a few masked rows, and stops everything.
 * With the vault, it recovers one original through the `recover` command; with `--keep`,
 * it leaves the services up until Ctrl-C and says how to reach them.
 *
 * @module
 */
import { generateRecoveryKeyPair } from "../strategies/_vault-crypto.ts";
import { randomBytes } from "node:crypto";
import process from "node:process";
import { type DatabasePool, sql } from "slonik";
import {
  createConsumer,
  createDatabasePool,
  createLogger,
  ensureMaskRecord,
  ensureSchema,
  loadStrategy,
  type MaskStrategy,
} from "../mod.ts";
import { formatSummary } from "../src/progress.ts";
import { sqlUserLoginRow } from "../src/schema.ts";
import { main as sqsLoginMasker } from "../src/main.ts";
import { parseFlags } from "../src/config.ts";
import { readQueueDepth } from "../src/sqs.ts";
import { runScript } from "./_command.ts";
import { emulatorClient, emulatorEnv, type SqsEmulator, startBoth, startSqsEmulator, usePostgres } from "./embedded.ts";
import { sampleBodies, sendBodies } from "./produce.ts";

const MESSAGES = 100;
/** The sample's seed: the same logins every run, so a test can tell what a row came from. */
const DEMO_SEED = 7;

const HELP = `Usage: npx tsx scripts/demo.ts [--strategy NAME] [--keep]
       (or: npm start [-- --strategy vault --keep], deno task start [--strategy vault --keep])

The whole pipeline on a machine with no services: starts the fauxqs SQS emulator and an
embedded Postgres on free ports (never a server you run), sends ${MESSAGES} sample logins (about
10% malformed), drains them with the strategy under fresh random keys, prints a summary and
a few masked rows, and removes everything it made.

  --strategy NAME   hmac (default), sha256, vault, ipcrypt, ipcrypt-pfx; with vault, one
                    original is recovered from its token by the recover command, audited
  --keep            leave the emulator and Postgres up when done, print how to reach them
                    (psql, the queues, the keys), and stop them on Ctrl-C
  -h, --help        show this help

Exit codes: 0 done, 1 a service did not start or the run failed, 2 a bad flag.
`;

/** What each built-in strategy puts in masked_ip, for the rows shown. */
const SHOWN_AS: Record<string, string> = {
  hmac: "ip and device_id masked with HMAC-SHA-256",
  sha256: "ip and device_id as plain SHA-256: weak, reversible by enumeration",
  vault: "vault tokens; the originals are encrypted in pii_vault.entries",
  ipcrypt: "ip encrypted with ipcrypt-deterministic, device_id with HMAC-SHA-256",
  "ipcrypt-pfx": "ip encrypted prefix-preserving, device_id with HMAC-SHA-256",
};

/** Fresh random keys for a strategy: no secret lives in the code. */
function demoKeys(strategy: string): Record<string, string> {
  const hex = (bytes: number) => randomBytes(bytes).toString("hex");
  if (strategy === "sha256") return {};
  if (strategy === "vault") {
    // The demo plays every role; a deployment gives the recovery key to the recovery role only.
    const pair = generateRecoveryKeyPair();
    return { VAULT_TOKEN_KEY: hex(32), VAULT_RECOVERY_PUBLIC_KEY: pair.publicKey, VAULT_RECOVERY_KEY: pair.privateKey };
  }
  if (strategy === "ipcrypt") return { MASK_IPCRYPT_KEY: hex(16), MASK_HMAC_KEY: hex(32) };
  if (strategy === "ipcrypt-pfx") return { MASK_IPCRYPT_KEY: hex(32), MASK_HMAC_KEY: hex(32) };
  return { MASK_HMAC_KEY: hex(32) };
}

const say = (line: string) => process.stdout.write(line + "\n");
const short = (text: string) => (text.length > 18 ? `${text.slice(0, 16)}…` : text);

/** Where the demo's services are, for what it does after the drain. */
interface DemoServices {
  emulator: SqsEmulator;
  pool: DatabasePool;
  databaseUrl: string;
  queueUrl: string;
  dlqUrl: string;
}

async function main(argv: readonly string[]): Promise<number> {
  const flags = parseFlags(argv, {
    strategy: { type: "string" },
    keep: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  if (flags.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const started = Date.now();
  const name = (flags.strategy as string | undefined) ?? "hmac";
  const keys = demoKeys(name);
  // Before anything starts: an unknown name is one line and exit 2.
  const strategy = await loadStrategy(name, { env: keys });
  say("Starting the SQS emulator and Postgres on free ports...");
  const [emulator, postgres] = await startBoth(startSqsEmulator(), usePostgres({}));
  const databaseUrl = await postgres.createDatabase("login_demo");
  const pool = await createDatabasePool(databaseUrl);
  try {
    const services: DemoServices = {
      emulator,
      pool,
      databaseUrl,
      queueUrl: await emulator.createQueue("login-queue"),
      dlqUrl: await emulator.createQueue("login-queue-dlq"),
    };
    say(`SQS ${emulator.endpoint}  Postgres ${postgres.embedded ? "embedded" : "DATABASE_URL"}`);
    await drain(services, strategy);
    if (strategy.name === "vault") await recoverOne(services, keys);
    if (flags.keep) await keepUntilStopped(services, name, keys);
    say(`\nDone in ${((Date.now() - started) / 1000).toFixed(1)} s. Everything was temporary and is gone now.`);
    return 0;
  } finally {
    await pool.end();
    await Promise.all([emulator.stop(), postgres.stop()]);
  }
}

/** Send the sample, drain it through the consumer, and show what landed where. */
async function drain(services: DemoServices, strategy: MaskStrategy): Promise<void> {
  const { emulator, pool, queueUrl, dlqUrl } = services;
  const sqs = emulatorClient(emulator.endpoint);
  try {
    await ensureSchema(pool);
    await strategy.setup?.(pool);
    await ensureMaskRecord(pool, strategy);
    const bodies = sampleBodies(MESSAGES, 0.1, DEMO_SEED);
    await sendBodies(sqs, queueUrl, bodies);
    say(`Sent ${bodies.length} login messages (about 10% malformed) to login-queue.\n`);
    if (strategy.caution) say(`Note: ${strategy.caution}.\n`);
    const logger = createLogger({ level: "warn", pretty: true });
    const consumer = createConsumer({ sqs, pool, strategy, queueUrl, dlqUrl, drain: true, logger });
    const stats = await consumer.run();

    const rows = await pool.any(sqlUserLoginRow`
      SELECT user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date::text
      FROM user_logins ORDER BY user_id LIMIT 5`);
    const dlq = await readQueueDepth(sqs, dlqUrl);
    const total = await pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM user_logins`);
    say(`Summary: ${formatSummary(stats)}`);
    say(`user_logins holds ${total} rows; login-queue-dlq holds ${dlq.visible} messages.\n`);
    say(`A few rows (${SHOWN_AS[strategy.name] ?? `masked by ${strategy.name}`}):`);
    for (const row of rows) {
      say(
        `  ${row.user_id.slice(0, 13)}…  ${row.device_type.padEnd(8)} ip=${short(row.masked_ip).padEnd(17)}  ` +
          `device=${short(row.masked_device_id)}  locale=${row.locale ?? "null"}  app_version=${row.app_version}  ` +
          row.create_date,
      );
    }
  } finally {
    sqs.destroy();
  }
}

/** The vault's round trip: the first row's ip back from its token, through the recover command. */
async function recoverOne(services: DemoServices, keys: Record<string, string>): Promise<void> {
  const row = await services.pool.one(sqlUserLoginRow`
    SELECT user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date::text
    FROM user_logins ORDER BY user_id LIMIT 1`);
  say(`\nThe vault gives an original back to an authorised role, and audits it. The ip of user ${row.user_id}:`);
  say(`  sqs-login-masker recover --reason "demo" --ticket DEMO-1 ${row.masked_ip}`);
  const code = await sqsLoginMasker(
    ["recover", "--database-url", services.databaseUrl, "--reason", "demo", "--ticket", "DEMO-1", row.masked_ip],
    { VAULT_RECOVERY_KEY: keys.VAULT_RECOVERY_KEY },
  );
  if (code !== 0) throw new Error(`recover exited ${code}`);
}

/** Leave the services up, say how to reach them, and wait for Ctrl-C (or SIGTERM). */
async function keepUntilStopped(services: DemoServices, strategy: string, keys: Record<string, string>) {
  const aws = emulatorEnv(services.emulator.endpoint);
  const exports = { ...aws, QUEUE_URL: services.queueUrl, DLQ_URL: services.dlqUrl, ...keys };
  say("\nThe services stay up until Ctrl-C, which stops them and removes what they hold.");
  say(`  psql ${services.databaseUrl}`);
  say(`  export ${Object.entries(exports).map(([name, value]) => `${name}=${value}`).join(" ")}`);
  say(`  export DATABASE_URL=${services.databaseUrl} MASK_STRATEGY=${strategy}`);
  say("  npx tsx mod.ts check        # then: npx tsx scripts/produce.ts --count 500, npx tsx mod.ts --drain");
  await new Promise<void>((resolve) => {
    process.once("SIGINT", () => resolve());
    process.once("SIGTERM", () => resolve());
  });
  say("\nStopping.");
}

process.exitCode = await runScript(() => main(process.argv.slice(2)));
