/**
 * The vault's cryptography, for the strategy and the vault's commands: the keys derived
 * from `VAULT_KEY`, the deterministic tokens, and AES-256-GCM sealing of entries and of the
 * wrapped token key. `node:crypto` only, so it runs unchanged under Deno.
 *
 * @module
 */
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createSecretKey,
  hkdfSync,
  type KeyObject,
  randomFillSync,
} from "node:crypto";
import type { PiiField } from "../src/contract.ts";
import { ConfigError } from "../src/errors.ts";

/** At least as many key bytes as AES-256 and HMAC-SHA-256 want. */
export const MIN_KEY_BYTES = 32;
/** Every token starts so: recognisable in a column, and versioned should the scheme change. */
export const TOKEN_PREFIX = "vlt1:";
/** What `forget.ts` leaves in a masked column: no token, nothing to recover. */
export const ERASED_MARKER = "erased";

const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const HKDF_SALT = "sqs-login-masker/vault";

/** A version of `VAULT_KEY`, with the two keys derived from it. Never log it. */
export interface VaultKey {
  version: number;
  /** Wraps the token key in the keyring. */
  wrapKey: Buffer;
  /** Derives the per-token keys that encrypt entries (a KeyObject: imported once, used per value). */
  entryKey: KeyObject;
}

/** The current key (writes), and the previous one while a rotation is under way. */
export interface VaultKeys {
  current: VaultKey;
  previous?: VaultKey;
}

/**
 * Derive a vault key from the secret's UTF-8 bytes. HKDF with distinct labels keeps the
 * wrapping and entry keys independent of each other.
 */
export function deriveVaultKey(secret: string, version: number): VaultKey {
  const ikm = Buffer.from(secret, "utf8");
  const derive = (label: string) => Buffer.from(hkdfSync("sha256", ikm, HKDF_SALT, label, 32));
  return { version, wrapKey: derive("keyring-wrap"), entryKey: createSecretKey(derive("entry-encryption")) };
}

function parseSecret(env: Record<string, string | undefined>, variable: string): string | undefined {
  const raw = env[variable];
  if (raw === undefined || raw === "") return undefined;
  const bytes = Buffer.byteLength(raw, "utf8");
  if (bytes < MIN_KEY_BYTES) {
    throw new ConfigError(
      `${variable} is ${bytes} bytes; it must be at least ${MIN_KEY_BYTES} (e.g. ${variable}=$(openssl rand -hex 32))`,
    );
  }
  return raw;
}

function parseVersion(raw: string | undefined, variable: string, fallback: number): number {
  if (raw === undefined || raw.trim() === "") return fallback;
  const version = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || version < 1 || version > 2_147_483_647) {
    // Not echoed: a key pasted into the wrong variable would land in the logs.
    throw new ConfigError(`${variable} must be a whole number from 1 (the value is not shown, in case it is a key)`);
  }
  return version;
}

/**
 * Read `VAULT_KEY` (at least 32 bytes) and `VAULT_KEY_VERSION` (default 1), and, during a
 * rotation, `VAULT_PREVIOUS_KEY` and `VAULT_PREVIOUS_KEY_VERSION` (default one less).
 *
 * @throws {ConfigError} for a missing or short key or a bad version; never echoes a key
 */
export function parseVaultKeys(env: Record<string, string | undefined>): VaultKeys {
  const secret = parseSecret(env, "VAULT_KEY");
  if (secret === undefined) {
    throw new ConfigError(
      "VAULT_KEY is not set: the vault needs a secret of at least 32 bytes (e.g. VAULT_KEY=$(openssl rand -hex 32))",
    );
  }
  const version = parseVersion(env.VAULT_KEY_VERSION, "VAULT_KEY_VERSION", 1);
  const keys: VaultKeys = { current: deriveVaultKey(secret, version) };
  const previous = parseSecret(env, "VAULT_PREVIOUS_KEY");
  if (previous !== undefined) {
    const previousVersion = parseVersion(env.VAULT_PREVIOUS_KEY_VERSION, "VAULT_PREVIOUS_KEY_VERSION", version - 1);
    if (previousVersion === version || previousVersion < 1) {
      throw new ConfigError(`VAULT_PREVIOUS_KEY_VERSION must name another version than VAULT_KEY_VERSION (${version})`);
    }
    keys.previous = deriveVaultKey(previous, previousVersion);
  }
  return keys;
}

/** The key of a given version, if configured. */
export function findVaultKey(keys: VaultKeys, version: number): VaultKey | undefined {
  return [keys.current, keys.previous].find((key) => key?.version === version);
}

/**
 * The token for a value: deterministic per (field, value) under the token key.
 *
 * @returns `vlt1:` and 43 base64url characters
 */
export function createToken(tokenKey: KeyObject | Uint8Array, field: PiiField, value: string): string {
  return TOKEN_PREFIX + createHmac("sha256", tokenKey).update(`${field}\0${value}`, "utf8").digest("base64url");
}

/** True for text shaped like a vault token. */
export function isToken(text: string): boolean {
  return /^vlt1:[A-Za-z0-9_-]{43}$/.test(text);
}

// Sealing: AES-256-GCM, nonce || ciphertext || tag.

/** Raised when a ciphertext does not open: wrong key, or changed since it was written. */
export class VaultDecryptError extends Error {
  override name = "VaultDecryptError";
}

/**
 * Random nonces drawn from one buffer of the CSPRNG's output, each 12 bytes used once:
 * a call to the generator per nonce costs more than the encryption it serves.
 */
const NONCES_PER_FILL = 1024;
const noncePool = Buffer.alloc(NONCE_BYTES * NONCES_PER_FILL);
let noncesUsed = NONCES_PER_FILL;

function nextNonce(): Buffer {
  if (noncesUsed === NONCES_PER_FILL) {
    randomFillSync(noncePool);
    noncesUsed = 0;
  }
  const start = noncesUsed++ * NONCE_BYTES;
  return Buffer.from(noncePool.subarray(start, start + NONCE_BYTES));
}

/** A key as a KeyObject: Node checks a raw key's kind on every cipher it makes, at twice the cost of the encryption. */
function seal(key: KeyObject | Uint8Array, plaintext: Uint8Array, aad: string): Buffer {
  const nonce = nextNonce();
  const cipher = createCipheriv("aes-256-gcm", key, nonce);
  cipher.setAAD(Buffer.from(aad, "utf8"));
  return Buffer.concat([nonce, cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
}

function open(key: KeyObject | Uint8Array, sealed: Uint8Array, aad: string): Buffer {
  if (sealed.length < NONCE_BYTES + TAG_BYTES) throw new VaultDecryptError("ciphertext is truncated");
  const nonce = sealed.subarray(0, NONCE_BYTES);
  const tag = sealed.subarray(sealed.length - TAG_BYTES);
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, nonce);
    decipher.setAAD(Buffer.from(aad, "utf8"));
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES)), decipher.final()]);
  } catch {
    // node's message ("Unsupported state or unable to authenticate data") helps nobody.
    throw new VaultDecryptError("authentication failed");
  }
}

/** Each token gets its own key, so no single AES key meets the random-nonce limit of 2^32 uses. */
function entryKeyFor(key: VaultKey, token: string): KeyObject {
  return createSecretKey(createHmac("sha256", key.entryKey).update(token, "utf8").digest());
}

/** Binds a ciphertext to its entry: moved to another token or field, it no longer opens. */
function entryAad(field: string, token: string): string {
  return `${TOKEN_PREFIX}entry\0${field}\0${token}`;
}

/** Binds a wrapped token key to its version. */
function keyringAad(version: number): string {
  return `${TOKEN_PREFIX}keyring\0${version}`;
}

/**
 * Encrypt a value for its vault entry.
 *
 * @returns nonce || ciphertext || tag
 */
export function encryptEntry(key: VaultKey, field: string, token: string, value: string): Buffer {
  return seal(entryKeyFor(key, token), Buffer.from(value, "utf8"), entryAad(field, token));
}

/**
 * Decrypt a vault entry.
 *
 * @throws {VaultDecryptError} when the key is wrong or the entry was changed or moved
 */
export function decryptEntry(key: VaultKey, field: string, token: string, sealed: Uint8Array): string {
  return open(entryKeyFor(key, token), sealed, entryAad(field, token)).toString("utf8");
}

/** Wrap the token key for the keyring row of `key.version`. */
export function wrapTokenKey(key: VaultKey, tokenKey: Uint8Array): Buffer {
  return seal(key.wrapKey, tokenKey, keyringAad(key.version));
}

/**
 * Unwrap the token key from a keyring row.
 *
 * @throws {VaultDecryptError} when `key` is not the key of that version
 */
export function unwrapTokenKey(key: VaultKey, wrapped: Uint8Array): Buffer {
  return open(key.wrapKey, wrapped, keyringAad(key.version));
}
