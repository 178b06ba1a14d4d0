/**
 * The plugin contract: what a masking strategy is, and what the tool hands it. The built-in
 * strategies (`strategies/*.ts`) and a user's own module implement it; the tool's masking
 * (`src/masking.ts`) and its Postgres sink call it. A leaf: it imports no file of the
 * project, so a strategy never depends on the tool's internals.
 *
 * A strategy module exports `create(options)`, which checks its options once and returns
 * `{ name, mask(value, field) }`; `mask` must be deterministic (equal inputs, equal
 * outputs) and must not reveal its input. Give its path to `--strategy`:
 *
 * ```ts
 * // my-strategy.ts:  npx tsx mod.ts --strategy ./my-strategy.ts ...
 * import { createHmac } from "node:crypto";
 * import type { MaskStrategy, StrategyOptions } from "sqs-login-masker";
 *
 * export function create({ env }: StrategyOptions): MaskStrategy {
 *   const key = env.MY_MASK_KEY;
 *   if (!key) throw new Error("MY_MASK_KEY is not set");
 *   return { name: "mine", mask: (value, field) => createHmac("sha256", key).update(`${field}:${value}`).digest("hex") };
 * }
 * ```
 *
 * An error thrown by `create` becomes one line and exit 2; one thrown by `mask` or
 * `persist` stops the tool with exit 1, the raw value redacted from its text.
 *
 * A keyed strategy also gives `fingerprint: keyFingerprint(key)`: the tool records it with
 * the table and refuses a run under another key (see `MaskStrategy.fingerprint`).
 *
 * @module
 */
import { createHmac, hkdfSync } from "node:crypto";
import type { DatabasePool, DatabaseTransactionConnection } from "slonik";

/** The PII fields of a login message. */
export const PII_FIELDS = ["ip", "device_id"] as const;
export type PiiField = (typeof PII_FIELDS)[number];

/** One PII value with its mask, handed to a strategy that keeps something beside the rows. */
export interface MaskedValue {
  field: PiiField;
  value: string;
  masked: string;
}

/**
 * A masking strategy. `mask` must be deterministic (equal inputs give equal outputs) and
 * its output must not reveal the input.
 */
export interface MaskStrategy {
  readonly name: string;
  mask(value: string, field: PiiField): string | Promise<string>;
  /**
   * What tells this strategy's masks apart from those of the same name under another key:
   * a check value of its key(s) that reveals nothing of them ({@link keyFingerprint}), read
   * once, after `setup`. The tool records `name` and `fingerprint` beside `user_logins` at
   * its first run and refuses, before loading anything, a run whose name or fingerprint
   * differs: rows masked two ways never join. `null` says the strategy has no key, its name
   * is the whole mask (`sha256`). Left out, only the name is recorded and checked, and
   * every start warns that a change of key cannot be detected.
   */
  readonly fingerprint?: string | null;
  /**
   * Fields whose mask is a keyed permutation of the value's own format (`ipcrypt-pfx` maps
   * an IPv4 address to an IPv4 address). Such a mask equals or contains its input by chance
   * for a few addresses under any key, and that is a ciphertext, not a leak: for these
   * fields the tool checks only that the mask fits the column.
   */
  readonly formatPreserving?: readonly PiiField[];
  /**
   * What a user of this strategy must know about its protection, when it is weak (`sha256`
   * is reversed by enumeration): logged as a warning at start, and said by `check`.
   */
  readonly caution?: string;
  /** Create what the strategy keeps in Postgres (run once at start, may be run again). */
  setup?(pool: DatabasePool): Promise<void>;
  /**
   * Write what the strategy keeps beside the rows, inside the batch's own transaction. It is
   * handed the values of the messages new to the table only, never a redelivery's: what an
   * erasure removed since must not come back. It may return a function, called once that
   * transaction has committed (never after a rollback), to remember what is now written.
   */
  persist?(tx: DatabaseTransactionConnection, values: readonly MaskedValue[]): Promise<void | (() => void)>;
}

/** What a strategy receives when it is created; it checks its options once, here. */
export interface StrategyOptions {
  env: Record<string, string | undefined>;
}

/** A strategy plugin: the shape of `strategies/*.ts` and of a user's own module. */
export interface StrategyModule {
  create(options: StrategyOptions): MaskStrategy | Promise<MaskStrategy>;
}

/** HKDF's salt and the label the check value is made of: fixed, so a key always gives one fingerprint. */
const FINGERPRINT_SALT = "sqs-login-masker/mask-fingerprint";
const FINGERPRINT_LABEL = "sqs-login-masker mask fingerprint v1";

/**
 * A key's fingerprint: HMAC-SHA-256 of a fixed label under a key derived from `key` for
 * that purpose alone (HKDF-SHA-256), 128 bits as hex. Equal keys give equal fingerprints;
 * it reveals nothing of the key, and is no mask of any value under it.
 *
 * @param key the key's bytes, or text taken as UTF-8
 * @example
 * ```ts
 * keyFingerprint("a".repeat(64)); // "01c96c0d47d9243430a8d378de1d2fd8"
 * ```
 */
export function keyFingerprint(key: string | Uint8Array): string {
  const derived = new Uint8Array(hkdfSync("sha256", key, FINGERPRINT_SALT, "key fingerprint", 32));
  return createHmac("sha256", derived).update(FINGERPRINT_LABEL).digest("hex").slice(0, 32);
}
