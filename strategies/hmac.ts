/**
 * `hmac` (the default): HMAC-SHA-256 of the UTF-8 value under the secret `MASK_HMAC_KEY`,
 * as lowercase hex. Equal values give equal masks, so duplicates stay visible; without
 * the key, nobody can test a guess, which is what makes it safe for small value spaces
 * such as IPv4 addresses.
 *
 * The key is used as the bytes of the variable's UTF-8 text and must be at least 32 bytes
 * (`openssl rand -hex 32` gives 64). Changing the key changes every mask: a table records its
 * key's fingerprint, and another key gets a table of its own (README, "One table, one mask").
 *
 * A strategy module exports `create(options)` returning `{ name, mask(value, field) }`;
 * this file is the model for a user's own.
 *
 * @module
 */
import { createHmac, createSecretKey, type KeyObject } from "node:crypto";
import { keyFingerprint, type MaskStrategy, type StrategyOptions } from "../src/contract.ts";

/** RFC 2104 recommends a key at least as long as the hash output. */
export const MIN_KEY_BYTES = 32;

/**
 * HMAC-SHA-256 as lowercase hex.
 *
 * @param key the secret key: bytes, or a `KeyObject` made once with `createSecretKey`, which
 *   is about 7x faster per call (raw bytes are turned into a key object on every call)
 * @param value the value to mask, taken as UTF-8
 */
export function hmacSha256Hex(key: KeyObject | Uint8Array, value: string | Uint8Array): string {
  return createHmac("sha256", key).update(value).digest("hex");
}

/**
 * Create the strategy from `MASK_HMAC_KEY`.
 *
 * @throws {Error} when the key is missing or shorter than 32 bytes
 */
export function create({ env }: StrategyOptions): MaskStrategy {
  const raw = env.MASK_HMAC_KEY;
  if (!raw) {
    throw new Error(
      "MASK_HMAC_KEY is not set: the hmac strategy needs a secret of at least 32 bytes (e.g. MASK_HMAC_KEY=$(openssl rand -hex 32))",
    );
  }
  const key = new TextEncoder().encode(raw);
  if (key.length < MIN_KEY_BYTES) {
    throw new Error(
      `MASK_HMAC_KEY is ${key.length} bytes; it must be at least ${MIN_KEY_BYTES} (e.g. MASK_HMAC_KEY=$(openssl rand -hex 32))`,
    );
  }
  // Made once: from raw bytes, createHmac builds a key object per call.
  const keyObject = createSecretKey(key);
  return { name: "hmac", fingerprint: keyFingerprint(key), mask: (value) => hmacSha256Hex(keyObject, value) };
}
