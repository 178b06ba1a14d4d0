/**
 * The bare command's command line: parse, say help or the version, load the strategy, run
 * the consumer (src/consume.ts), and report: the summary on stdout, or one line on stderr
 * and an exit code. SIGINT and SIGTERM stop cleanly, a second one exits at once.
 *
 * @module
 */
import process from "node:process";
import { getHeapSpaceStatistics, setFlagsFromString } from "node:v8";
import { type Config, formatSettingsHelp, parseConfig, VERSION } from "./config.ts";
import type { MaskStrategy } from "./contract.ts";
import { SUBCOMMANDS } from "./commands/registry.ts";
import { runConsumer, StoppedAtStartUp, type Terminal } from "./consume.ts";
import { failed } from "./errors.ts";
import { createLogger } from "./log.ts";
import { loadStrategy } from "./masking.ts";
import { describeStartupError } from "./postgres-errors.ts";
import { formatSummary, type ProgressLine } from "./progress.ts";

export const HELP = `Usage: sqs-login-masker [options]            consume
       sqs-login-masker COMMAND [options]    an operator's command (below)
       (from a checkout: npx tsx mod.ts …, node mod.ts …, or deno task consume …)

Consume login events from SQS, mask ip and device_id, load them into Postgres (user_logins).

Commands (each with --help):
${Object.entries(SUBCOMMANDS).map(([name, { summary }]) => `  ${name.padEnd(18)} ${summary}`).join("\n")}

Options (flags > environment > --env-file > defaults):
${formatSettingsHelp()}
  --env-file PATH        read variables from PATH (KEY=value lines, as .env.example);
                         the environment wins over it; every command takes it
  --version              print the version
  -h, --help             show this help

Strategies:
  hmac     HMAC-SHA-256 under MASK_HMAC_KEY (at least 32 bytes). Recommended.
  sha256   plain SHA-256 hex, identical to Python's hashlib.sha256(v.encode()).hexdigest(),
           kept only to stay joinable with data masked by the old Python tool. It is WEAK:
           an unsalted hash of an IPv4 address is reversed by hashing all 2^32 addresses,
           about an hour on one core.
  vault    deterministic token in the row (VAULT_TOKEN_KEY); the original sealed to
           VAULT_RECOVERY_PUBLIC_KEY in a vault table, recoverable with the recover
           command by the role holding the private key. Keys: vault-keygen; roles,
           rotation, erasure: docs/vault.md
  ipcrypt  ip encrypted with ipcrypt-deterministic (AES-128) under MASK_IPCRYPT_KEY
           (16 bytes, hex): still an address (IPv6), nothing about its network kept.
  ipcrypt-pfx
           ip encrypted prefix-preserving under MASK_IPCRYPT_KEY (32 bytes, hex, halves
           differ): IPv4 stays IPv4, and addresses sharing a /24 (any prefix) share it
           masked, so they are linkable at /24 by design.
           Both: device_id as hmac (MASK_HMAC_KEY); whoever holds MASK_IPCRYPT_KEY can
           decrypt every ip with the ipcrypt decrypt command.
  An ip is masked in one canonical text: IPv6 as RFC 5952 writes it, an IPv4-mapped
  address as its IPv4 address.
  One table, one mask: the first run records the strategy and a fingerprint of its key
  beside user_logins (user_logins_mask); a run with another strategy or key is refused
  before it loads anything. A new key gets a table of its own (README.md).

AWS region, credentials and endpoint come from the SDK's default chain
(AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL for LocalStack or an emulator).

Exit codes: 0 done or stopped cleanly, 1 runtime failure, 2 usage or configuration error,
130 a second SIGINT/SIGTERM during a stop (exits at once; what was in flight comes back
after its visibility timeout).
`;

// Tests check the bare command's start-up line through it here; src/ imports it from src/postgres-errors.ts.
export { describeStartupError };

/** Young-generation size at which the command line stops V8 from growing it further. */
const YOUNG_GENERATION_CAP_BYTES = 16 * 1024 * 1024;
/** Old-generation growth between full collections, in percent of what survived the last. */
const OLD_GENERATION_GROWTH_PERCENT = 25;

/**
 * Keep V8's heap near what is live: V8 sizes it by the machine's memory, and a steady
 * stream of short-lived receive buffers otherwise grows it far past what is live
 * (docs/benchmark.md has the figures). Heap sizes cannot be set once the runtime runs, but
 * growth can. Only the command line does this: a library user's process keeps its own.
 */
function boundHeap(): void {
  try {
    setFlagsFromString(`--heap-growing-percent=${OLD_GENERATION_GROWTH_PERCENT}`);
  } catch {
    return; // a runtime whose node:v8 lacks these keeps its own sizing; memory is not correctness
  }
  if (capYoungGeneration()) return;
  const timer = setInterval(() => capYoungGeneration() && clearInterval(timer), 20);
  timer.unref();
}

/** Stop the young generation growing once it has reached the cap; true once done (or impossible). */
function capYoungGeneration(): boolean {
  try {
    const young = getHeapSpaceStatistics().find((space) => space.space_name === "new_space");
    if (young && young.space_size < YOUNG_GENERATION_CAP_BYTES) return false;
    setFlagsFromString("--semi-space-growth-factor=1");
  } catch {
    // As above: keep the runtime's own sizing.
  }
  return true;
}

/** The log and the drain progress line share stderr: the line is cleared before each log line. */
function createTerminal(config: Config): Terminal {
  let progress: ProgressLine | undefined;
  const logger = createLogger({
    level: config.logLevel,
    pretty: (config.logFormat ?? (process.stderr.isTTY === true ? "pretty" : "json")) === "pretty",
    write(line) {
      progress?.clear();
      process.stderr.write(line + "\n");
    },
  });
  return {
    logger,
    showProgress: (line) => (progress = line),
    stopProgress: () => progress?.stop(),
  };
}

/**
 * The bare command: parse, consume, report. Writes to stdout and stderr and handles SIGINT
 * and SIGTERM.
 *
 * @param argv the arguments after the program name
 * @param env the environment
 * @returns the exit code: 0 done, 1 runtime failure, 2 usage or configuration error
 */
export async function consumeCommand(
  argv: readonly string[],
  env: Record<string, string | undefined>,
): Promise<number> {
  // First: the young generation grows fast while the tool starts, and is capped only once seen.
  boundHeap();
  let config: Config;
  let strategy: MaskStrategy;
  try {
    config = parseConfig(argv, env);
    if (config.help || config.version) {
      process.stdout.write(config.help ? HELP : `sqs-login-masker ${VERSION}\n`);
      return 0;
    }
    strategy = await loadStrategy(config.strategy, { env });
  } catch (error) {
    return failed(error, { usage: true });
  }
  const terminal = createTerminal(config);
  try {
    process.stdout.write(formatSummary(await runConsumer(config, strategy, terminal)) + "\n");
    return 0;
  } catch (error) {
    if (error instanceof StoppedAtStartUp) {
      terminal.logger.info("stopped during start-up: nothing was received");
      return 0;
    }
    return failed(error, { describe: (e) => describeStartupError(e, config.databaseUrl) });
  }
}
