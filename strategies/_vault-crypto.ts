/**
 * The vault's cryptography, with its keys split by role (docs/vault.md):
 *
 * - `VAULT_TOKEN_KEY` (the loader's alone) makes the deterministic tokens: HMAC-SHA-256.
 * - `VAULT_RECOVERY_PUBLIC_KEY` (the loader's) seals entries: X25519 with an ephemeral key,
 *   HKDF-SHA-256, AES-256-GCM. It opens nothing.
 * - `VAULT_RECOVERY_KEY` (the recovery role's, and the admin's during a rotation) opens
 *   entries. It makes no token, so whoever holds it cannot test a guess against
 *   `user_logins`; nor is either secret derivable from the other.
 *
 * `node:crypto` only, so it runs unchanged under Deno.
 *
 * @module
 */
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createPrivateKey,
  createPublicKey,
  createSecretKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  type KeyObject,
  randomFillSync,
} from "node:crypto";
import type { PiiField } from "../src/contract.ts";
import { ConfigError } from "../src/errors.ts";

/** At least as many key bytes as HMAC-SHA-256 wants. */
export const MIN_KEY_BYTES = 32;
/** Every token starts so: recognisable in a column, and versioned should the scheme change. */
export const TOKEN_PREFIX = "vlt1:";
/** What `forget.ts` leaves in a masked column: no token, nothing to recover. */
export const ERASED_MARKER = "erased";

const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const X25519_BYTES = 32;
/** The first byte of every sealed entry: the scheme, should it ever change. */
const SEALED_SCHEME = 2;
const HKDF_SALT = "sqs-login-masker/vault";
// DER headers of a raw X25519 key: the one import form Node and Deno both take.
const SPKI_PREFIX = Buffer.from("302a300506032b656e032100", "hex");
const PKCS8_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex");

/** The variables of the single-key scheme this version replaced. */
const RETIRED_VARIABLES = ["VAULT_KEY", "VAULT_KEY_VERSION", "VAULT_PREVIOUS_KEY", "VAULT_PREVIOUS_KEY_VERSION"];

/** The recovery key pair's public half: seals entries, opens none. */
export interface RecoveryPublicKey {
  key: KeyObject;
  /** The 32 raw bytes, as the keyring stores them. */
  raw: Buffer;
}

/** The recovery key pair's private half: opens entries. Never log it. */
export interface RecoveryKey {
  privateKey: KeyObject;
  publicKey: RecoveryPublicKey;
}

function keyBytes(raw: string, variable: string): Buffer {
  const bytes = Buffer.from(raw.trim(), "base64url");
  // Not echoed: it is a key.
  if (bytes.length !== X25519_BYTES || bytes.toString("base64url") !== raw.trim().replace(/=+$/, "")) {
    throw new ConfigError(
      `${variable} is not a key of sqs-login-masker vault-keygen (32 bytes, base64url; the value is not shown)`,
    );
  }
  return bytes;
}

/** A public key from its 32 raw bytes. */
export function importRecoveryPublicKey(raw: Uint8Array): RecoveryPublicKey {
  const bytes = Buffer.from(raw);
  return {
    key: createPublicKey({ key: Buffer.concat([SPKI_PREFIX, bytes]), format: "der", type: "spki" }),
    raw: bytes,
  };
}

function importRecoveryKey(raw: Buffer): RecoveryKey {
  const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, raw]), format: "der", type: "pkcs8" });
  const spki = createPublicKey(privateKey).export({ format: "der", type: "spki" });
  return { privateKey, publicKey: importRecoveryPublicKey(spki.subarray(SPKI_PREFIX.length)) };
}

/** A new recovery key pair, each half as the 43 base64url characters its variable takes. */
export function generateRecoveryKeyPair(): { privateKey: string; publicKey: string } {
  const { privateKey } = generateKeyPairSync("x25519");
  const raw = privateKey.export({ format: "der", type: "pkcs8" }).subarray(PKCS8_PREFIX.length);
  return {
    privateKey: raw.toString("base64url"),
    publicKey: importRecoveryKey(raw).publicKey.raw.toString("base64url"),
  };
}

/** The public key as its variable spells it, e.g. in a message naming which one is configured. */
export function formatPublicKey(key: RecoveryPublicKey): string {
  return key.raw.toString("base64url");
}

function refuseRetiredVariables(env: Record<string, string | undefined>): void {
  // Asked with hasOwn first: the names are no setting of this version, only a mistake to name.
  const set = RETIRED_VARIABLES.filter((v) => Object.hasOwn(env, v) && (env[v] ?? "") !== "");
  if (set.length > 0) {
    throw new ConfigError(
      `${set.join(", ")} ${
        set.length === 1 ? "belongs" : "belong"
      } to the single-key vault this version replaced: remove ${
        set.length === 1 ? "it" : "them"
      }, and set VAULT_TOKEN_KEY and the recovery key pair of sqs-login-masker vault-keygen (docs/vault.md)`,
    );
  }
}

/**
 * The token key, from `VAULT_TOKEN_KEY` (at least 32 bytes): the loader's alone.
 *
 * @returns the HMAC key (a KeyObject: imported once, used per value) and its raw bytes, for the fingerprint
 * @throws {ConfigError} when it is missing or short, or a variable of the single-key scheme is set
 */
export function parseTokenKey(env: Record<string, string | undefined>): { key: KeyObject; raw: Buffer } {
  refuseRetiredVariables(env);
  const secret = env.VAULT_TOKEN_KEY ?? "";
  if (secret === "") {
    throw new ConfigError(
      "VAULT_TOKEN_KEY is not set: the vault's loader needs it and VAULT_RECOVERY_PUBLIC_KEY (make them with sqs-login-masker vault-keygen)",
    );
  }
  const bytes = Buffer.byteLength(secret, "utf8");
  if (bytes < MIN_KEY_BYTES) {
    throw new ConfigError(
      `VAULT_TOKEN_KEY is ${bytes} bytes; it must be at least ${MIN_KEY_BYTES} (make one with sqs-login-masker vault-keygen)`,
    );
  }
  const raw = Buffer.from(hkdfSync("sha256", Buffer.from(secret, "utf8"), HKDF_SALT, "token", 32));
  return { key: createSecretKey(raw), raw };
}

/**
 * The public key entries are sealed to: `VAULT_RECOVERY_PUBLIC_KEY`.
 *
 * @throws {ConfigError} when it is missing or not a key
 */
export function parseRecoveryPublicKey(env: Record<string, string | undefined>): RecoveryPublicKey {
  refuseRetiredVariables(env);
  const raw = env.VAULT_RECOVERY_PUBLIC_KEY ?? "";
  if (raw === "") {
    throw new ConfigError(
      "VAULT_RECOVERY_PUBLIC_KEY is not set: the key entries are sealed to (make the pair with sqs-login-masker vault-keygen)",
    );
  }
  return importRecoveryPublicKey(keyBytes(raw, "VAULT_RECOVERY_PUBLIC_KEY"));
}

/**
 * The private keys that open entries: `VAULT_RECOVERY_KEY`, and during a rotation
 * `VAULT_PREVIOUS_RECOVERY_KEY`. Which keyring version each opens is the keyring's to say.
 *
 * @param required the variables that must be set
 * @throws {ConfigError} when a required one is missing or one is not a key
 */
export function parseRecoveryKeys(
  env: Record<string, string | undefined>,
  required: ReadonlyArray<"VAULT_RECOVERY_KEY" | "VAULT_PREVIOUS_RECOVERY_KEY">,
): RecoveryKey[] {
  refuseRetiredVariables(env);
  const keys: RecoveryKey[] = [];
  for (const variable of ["VAULT_RECOVERY_KEY", "VAULT_PREVIOUS_RECOVERY_KEY"] as const) {
    const raw = env[variable] ?? "";
    if (raw === "") {
      if (required.includes(variable)) {
        throw new ConfigError(
          `${variable} is not set: it is the private half of the recovery key pair (sqs-login-masker vault-keygen)`,
        );
      }
      continue;
    }
    keys.push(importRecoveryKey(keyBytes(raw, variable)));
  }
  return keys;
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

/** Binds a ciphertext to its entry: moved to another token or field, it no longer opens. */
function entryAad(field: string, token: string): Buffer {
  return Buffer.from(`${TOKEN_PREFIX}entry\0${field}\0${token}`, "utf8");
}

/**
 * HKDF-SHA-256 (RFC 5869) in its two steps, so a batch extracts once: the pseudorandom key of
 * the shared secret, bound to both public keys by the salt...
 */
function extractKey(shared: Buffer, ephemeralRaw: Buffer, recipientRaw: Buffer): KeyObject {
  const salt = Buffer.concat([Buffer.from(HKDF_SALT, "utf8"), ephemeralRaw, recipientRaw]);
  return createSecretKey(createHmac("sha256", salt).update(shared).digest());
}

const FIRST_BLOCK = Buffer.from([1]);

/** ...and each entry's AES key expanded from it, bound to the entry (one block: T(1) = HMAC(PRK, info || 1)). */
function expandKey(prk: KeyObject, aad: Buffer): KeyObject {
  return createSecretKey(createHmac("sha256", prk).update(aad).update(FIRST_BLOCK).digest());
}

/**
 * A sealer of entries to `recipient`: one ephemeral key pair per sealer (a batch), since an
 * X25519 agreement costs several times the rest; each entry still gets its own AES key.
 *
 * @returns seal(field, token, value): scheme byte || ephemeral public key || nonce || ciphertext || tag
 */
export function createEntrySealer(
  recipient: RecoveryPublicKey,
): (field: string, token: string, value: string) => Buffer {
  const ephemeral = generateKeyPairSync("x25519");
  const ephemeralRaw = ephemeral.publicKey.export({ format: "der", type: "spki" }).subarray(SPKI_PREFIX.length);
  const shared = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: recipient.key });
  const prk = extractKey(shared, ephemeralRaw, recipient.raw);
  const header = Buffer.concat([Buffer.from([SEALED_SCHEME]), ephemeralRaw]);
  return (field, token, value) => {
    const nonce = nextNonce();
    const aad = entryAad(field, token);
    const cipher = createCipheriv("aes-256-gcm", expandKey(prk, aad), nonce);
    cipher.setAAD(aad);
    return Buffer.concat([header, nonce, cipher.update(value, "utf8"), cipher.final(), cipher.getAuthTag()]);
  };
}

/**
 * Open a vault entry with the recovery key.
 *
 * @throws {VaultDecryptError} when the key is wrong or the entry was changed or moved
 */
export function openEntry(key: RecoveryKey, field: string, token: string, sealed: Uint8Array): string {
  const head = 1 + X25519_BYTES;
  if (sealed.length < head + NONCE_BYTES + TAG_BYTES || sealed[0] !== SEALED_SCHEME) {
    throw new VaultDecryptError("not a sealed entry of this scheme");
  }
  const ephemeralRaw = Buffer.from(sealed.subarray(1, head));
  try {
    const shared = diffieHellman({ privateKey: key.privateKey, publicKey: importRecoveryPublicKey(ephemeralRaw).key });
    const aad = entryAad(field, token);
    const decipher = createDecipheriv(
      "aes-256-gcm",
      expandKey(extractKey(shared, ephemeralRaw, key.publicKey.raw), aad),
      sealed.subarray(head, head + NONCE_BYTES),
    );
    decipher.setAAD(aad);
    decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
    return Buffer.concat([
      decipher.update(sealed.subarray(head + NONCE_BYTES, sealed.length - TAG_BYTES)),
      decipher.final(),
    ])
      .toString("utf8");
  } catch {
    // node's message ("Unsupported state or unable to authenticate data") helps nobody.
    throw new VaultDecryptError("authentication failed");
  }
}
