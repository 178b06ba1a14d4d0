/**
 * The bench's flags: what a run is asked to do, checked before anything starts.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseCount, parseFlags } from "../../src/config.ts";
import { ConfigError } from "../../src/errors.ts";
import { loadStrategy } from "../../src/masking.ts";
import { generateRecoveryKeyPair } from "../../strategies/_vault-crypto.ts";

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));
/** A key for the benchmark's own throwaway data; never a real secret. */
export const BENCH_HMAC_KEY = "bench-only-key-".repeat(3);
/** Entries are sealed to a throwaway pair's public half; the benchmark opens none. */
const BENCH_RECOVERY_PUBLIC_KEY = generateRecoveryKeyPair().publicKey;
/** The strategies' keys the tool gets here: throwaway ones (or the caller's vault keys), never real secrets. */
export function toolKeys(strategy: string): Record<string, string> {
  return {
    MASK_HMAC_KEY: BENCH_HMAC_KEY,
    VAULT_TOKEN_KEY: process.env.VAULT_TOKEN_KEY ?? randomBytes(32).toString("hex"),
    VAULT_RECOVERY_PUBLIC_KEY: process.env.VAULT_RECOVERY_PUBLIC_KEY ?? BENCH_RECOVERY_PUBLIC_KEY,
    // ipcrypt takes a 16-byte key, ipcrypt-pfx a 32-byte one; the others ignore it.
    MASK_IPCRYPT_KEY: randomBytes(strategy === "ipcrypt" ? 16 : 32).toString("hex"),
  };
}
export const PHASES = ["ceiling", "sqs-consumer", "tool", "large", "baseline"] as const;
/** A `large` phase body: SQS's 1 MiB limit less room for the JSON around the padding. */
export const LARGE_BODY_BYTES = 1_040_000;
export type Phase = (typeof PHASES)[number];
export const CORPORA = ["logins", "unique"] as const;
export type Corpus = (typeof CORPORA)[number];
/** Logins per user, on average, in the `logins` corpus. */
export const LOGINS_PER_USER = 10;
/** How the tool phases start the tool: as a checkout runs it, or as the image does. */
export const ENTRIES = ["source", "bundle"] as const;
export type Entry = (typeof ENTRIES)[number];

/** What one bench run is asked to do. */
export interface BenchOptions {
  n: number;
  /** Messages for the slow per-message baseline. */
  baselineN: number;
  /** Messages of nearly 1 MiB for the `large` phase. */
  largeN: number;
  phases: Phase[];
  strategies: string[];
  /** Receives in flight for the ceiling client. */
  ceilingConcurrency: number;
  /** sqs-consumer instances on the queue in the `sqs-consumer` phase. */
  sqsConsumerInstances: number;
  /** Extra flags passed to the tool, e.g. `--batch-size 200`. */
  toolArgs: string[];
  /**
   * The checkouts whose `mod.ts` the tool phases run: this one, or several for paired runs
   * (each strategy's phase runs once per checkout, their order alternating each round).
   */
  toolDirs: string[];
  /** `source`: \`node mod.ts\` (Node strips the types); `bundle`: the single file the image runs, built first in each checkout. */
  entry: Entry;
  /** Rounds of the tool phases: paired runs within one bench process. */
  repeat: number;
  /** Round trip added to every SQS call of the ceiling and the tool, as a remote queue would (0: none). */
  latencyMs: number;
  /** `logins`: users who come back, from their own devices and addresses; `unique`: every message different. */
  corpus: Corpus;
  json: boolean;
}

const DEFAULT_STRATEGIES = "hmac,sha256,vault,ipcrypt,ipcrypt-pfx";

export const HELP = `Usage: npx tsx scripts/bench.ts [options]      (or: npm run bench -- [options])

How fast the tool drains a backlog, beside the fastest bare SQS client (the ceiling) and a
message-at-a-time consumer (the baseline), on the same emulator (its own process) and
Postgres (embedded, or the server DATABASE_URL names).

  --n N                     messages per phase (default 100000)
  --baseline-n N            messages for the slow baseline (default: --n, at most 1000)
  --large-n N               messages of nearly 1 MiB for the large phase (default 300)
  --phases LIST             which of ceiling,sqs-consumer,tool,large,baseline to run
                            (default: all)
  --strategies LIST         strategies for the tool phase (default ${DEFAULT_STRATEGIES})
  --ceiling-concurrency N   receives in flight for the ceiling client (default 16)
  --sqs-consumer-instances N  sqs-consumer instances in the sqs-consumer phase (default 4)
  --tool-args="FLAGS"       extra flags for the tool, e.g. --tool-args="--batch-size 200"
  --tool-dir DIR[,DIR]      run the mod.ts of other checkouts (with their node_modules) on
                            the same corpus and services: before/after in paired runs
  --entry source|bundle     how the tool starts: node mod.ts, as a checkout runs it
                            (default), or the single file the image runs (npm run bundle,
                            built in each --tool-dir first)
  --repeat N                rounds of the tool phases (default 1); with two --tool-dir,
                            their order alternates each round (A B, B A, ...)
  --latency-ms N            add N ms of round trip to every SQS call of the ceiling and the
                            tool (a TCP proxy), as a remote queue would (default 0)
  --corpus logins|unique    logins: users who come back, from their own devices and addresses
                            (default); unique: every message different (docs/benchmark.md)
  --json                    print the report as JSON instead of a table
  -h, --help                show this help

Exit codes: 0 every phase ran, 1 a phase failed, 2 usage or configuration error.
`;

/** Largest --n: a million took minutes here; a hundred million is far beyond any use. */
const MAX_N = 100_000_000;

/** Check every flag before anything starts; undefined for --help. */
export async function parseOptions(argv: readonly string[]): Promise<BenchOptions | undefined> {
  const values = parseFlags(argv, {
    n: { type: "string" },
    "baseline-n": { type: "string" },
    "large-n": { type: "string" },
    phases: { type: "string" },
    strategies: { type: "string" },
    "ceiling-concurrency": { type: "string" },
    "sqs-consumer-instances": { type: "string" },
    "tool-args": { type: "string" },
    "tool-dir": { type: "string" },
    entry: { type: "string" },
    repeat: { type: "string" },
    "latency-ms": { type: "string" },
    corpus: { type: "string" },
    json: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) return undefined;
  const flag = (name: string) => values[name] as string | undefined;
  const n = parseCount(flag("n"), "--n", 100_000, 1, MAX_N);
  const phases = (flag("phases") ?? PHASES.join(",")).split(",").filter(Boolean);
  const unknown = phases.filter((p) => !(PHASES as readonly string[]).includes(p));
  if (unknown.length > 0) throw new ConfigError(`--phases takes ${PHASES.join(", ")}, got "${unknown.join(",")}"`);
  const corpus = flag("corpus") ?? "logins";
  if (!(CORPORA as readonly string[]).includes(corpus)) {
    throw new ConfigError(`--corpus takes ${CORPORA.join(" or ")}, got "${corpus}"`);
  }
  const entry = flag("entry") ?? "source";
  if (!(ENTRIES as readonly string[]).includes(entry)) {
    throw new ConfigError(`--entry takes source or bundle, got "${entry}"`);
  }
  const strategies = (flag("strategies") ?? DEFAULT_STRATEGIES).split(",").filter(Boolean);
  // As the tool will load them, with the keys it will get: a bad name fails now, not mid-run.
  for (const strategy of strategies) await loadStrategy(strategy, { env: toolKeys(strategy) });
  return {
    n,
    // About ten seconds of the slow consumer is enough for a steady rate.
    baselineN: parseCount(flag("baseline-n"), "--baseline-n", Math.min(n, 1_000), 1, MAX_N),
    largeN: parseCount(flag("large-n"), "--large-n", 300, 1, MAX_N),
    phases: phases as Phase[],
    strategies,
    ceilingConcurrency: parseCount(flag("ceiling-concurrency"), "--ceiling-concurrency", 16, 1, 256),
    sqsConsumerInstances: parseCount(flag("sqs-consumer-instances"), "--sqs-consumer-instances", 4, 1, 64),
    toolArgs: (flag("tool-args") ?? "").split(" ").filter(Boolean),
    toolDirs: (flag("tool-dir") ?? ROOT).split(",").filter(Boolean).map(checkToolDir),
    entry: entry as Entry,
    repeat: parseCount(flag("repeat"), "--repeat", 1, 1, 100),
    latencyMs: parseCount(flag("latency-ms"), "--latency-ms", 0, 0, 1_000),
    corpus: corpus as Corpus,
    json: values.json === true,
  };
}

/** A checkout `--tool-dir` names, checked to hold a mod.ts and its dependencies. */
function checkToolDir(raw: string): string {
  const dir = resolve(raw);
  for (const needed of ["mod.ts", "node_modules/slonik/package.json"]) {
    if (!existsSync(join(dir, needed))) {
      throw new ConfigError(`--tool-dir ${raw} has no ${needed}: give a checkout with its dependencies installed`);
    }
  }
  return dir;
}
