/**
 * The ipcrypt ciphers of draft-denis-ipcrypt (IETF Internet-Draft "Methods for IP Address
 * Encryption and Obfuscation"), shared by the `ipcrypt` and `ipcrypt-pfx` strategies and
 * by `scripts/ipcrypt.ts`: the key check and the two deterministic modes, on the 16-byte
 * addresses of src/ip.ts.
 *
 * - **ipcrypt-deterministic** (the draft's section "ipcrypt-deterministic"): AES-128 on
 *   the 16-byte address. Any address becomes an IPv6 address (an IPv4 one too).
 * - **ipcrypt-pfx** (section "Concrete Instantiation: ipcrypt-pfx"): each bit is XORed
 *   with one bit of AES-128(K1, p) XOR AES-128(K2, p), where p is the padded prefix of
 *   the original bits before it. Addresses sharing an n-bit prefix encrypt to addresses
 *   sharing an n-bit prefix; IPv4 stays IPv4.
 *
 * `node:crypto` only (one AES-128-ECB cipher per key, made once), so it runs unchanged
 * under Deno. Nothing here puts an address or a key in an error message.
 *
 * @module
 */
import { type Cipheriv, createCipheriv, createDecipheriv, type Decipheriv } from "node:crypto";
import { addressToBytes, bytesToAddress, isIpv4Mapped } from "../src/ip.ts";

/** The two modes: `deterministic` (16-byte key) and `pfx` (32-byte key, prefix-preserving). */
export type IpcryptMode = "deterministic" | "pfx";
export const IPCRYPT_MODES: readonly IpcryptMode[] = ["deterministic", "pfx"];

/** The variable both strategies and `scripts/ipcrypt.ts` read the key from, in hex. */
export const IPCRYPT_KEY_VARIABLE = "MASK_IPCRYPT_KEY";
export const IPCRYPT_KEY_BYTES: Readonly<Record<IpcryptMode, number>> = { deterministic: 16, pfx: 32 };
/** Each mode's name in the draft, for messages. */
const SPEC_NAMES: Readonly<Record<IpcryptMode, string>> = {
  deterministic: "ipcrypt-deterministic",
  pfx: "ipcrypt-pfx",
};

const BLOCK_BYTES = 16;
/** Bits before an IPv4 address in its mapped form: pfx starts encrypting there. */
const IPV4_MAPPED_PREFIX_BITS = 96;

/** A missing or malformed key; it never quotes the key. */
export class IpcryptKeyError extends Error {
  override name = "IpcryptKeyError";
}

// ---------------------------------------------------------------------------------------
// The key
// ---------------------------------------------------------------------------------------

const HEX = /^[0-9a-fA-F]*$/;

/**
 * Read the key for a mode from `MASK_IPCRYPT_KEY` (hex): 16 bytes for `deterministic`,
 * 32 for `pfx`, whose halves must differ (equal halves cancel out: the draft's section
 * "Key Requirements" says pfx would then return every address unchanged).
 *
 * @throws {IpcryptKeyError} one line that says what is wrong and how to fix it, never the key
 */
export function readIpcryptKey(env: Record<string, string | undefined>, mode: IpcryptMode): Uint8Array {
  const want = IPCRYPT_KEY_BYTES[mode];
  const name = SPEC_NAMES[mode];
  const fix = `e.g. ${IPCRYPT_KEY_VARIABLE}=$(openssl rand -hex ${want})`;
  const raw = env[IPCRYPT_KEY_VARIABLE];
  if (raw === undefined || raw === "") {
    throw new IpcryptKeyError(`${IPCRYPT_KEY_VARIABLE} is not set: ${name} needs a ${want}-byte key in hex (${fix})`);
  }
  if (!HEX.test(raw) || raw.length % 2 !== 0) {
    throw new IpcryptKeyError(`${IPCRYPT_KEY_VARIABLE} is not hex: ${name} needs ${want * 2} hex digits (${fix})`);
  }
  const key = Uint8Array.from(raw.match(/../g)!, (pair) => parseInt(pair, 16));
  if (key.length !== want) {
    throw new IpcryptKeyError(`${IPCRYPT_KEY_VARIABLE} is ${key.length} bytes; ${name} needs exactly ${want} (${fix})`);
  }
  if (mode === "pfx" && key.subarray(0, 16).every((byte, i) => byte === key[16 + i])) {
    throw new IpcryptKeyError(
      `${IPCRYPT_KEY_VARIABLE}'s two 16-byte halves are equal: ${name} would leave every address unchanged (${fix})`,
    );
  }
  return key;
}

// ---------------------------------------------------------------------------------------
// The ciphers
// ---------------------------------------------------------------------------------------

/** Encrypts and decrypts address text under one key; both return canonical text. */
export interface IpCipher {
  readonly mode: IpcryptMode;
  /** @throws {AddressError} for text that is no address */
  encrypt(address: string): string;
  /** @throws {AddressError} for text that is no address */
  decrypt(address: string): string;
}

/**
 * AES-128 on single blocks. ECB keeps no state between blocks, so one cipher object (its
 * key schedule made once) serves every call; padding is off and `final` is never called.
 */
function aes128(key: Uint8Array): { encrypt(blocks: Uint8Array): Uint8Array; decrypt(blocks: Uint8Array): Uint8Array } {
  const cipher: Cipheriv = createCipheriv("aes-128-ecb", key, null).setAutoPadding(false);
  let decipher: Decipheriv | undefined; // only recovery needs it
  return {
    encrypt: (blocks) => cipher.update(blocks),
    decrypt(blocks) {
      decipher ??= createDecipheriv("aes-128-ecb", key, null).setAutoPadding(false);
      return decipher.update(blocks);
    },
  };
}

/** The cipher of a mode, for a key of that mode's length (see `readIpcryptKey`). */
export function createIpCipher(mode: IpcryptMode, key: Uint8Array): IpCipher {
  return mode === "pfx" ? createPfxCipher(key) : createDeterministicCipher(key);
}

/** ipcrypt-deterministic: AES-128 on the 16-byte address; the output is an address too. */
export function createDeterministicCipher(key: Uint8Array): IpCipher {
  if (key.length !== IPCRYPT_KEY_BYTES.deterministic) {
    throw new IpcryptKeyError(`${SPEC_NAMES.deterministic} needs a 16-byte key`);
  }
  const aes = aes128(key);
  return {
    mode: "deterministic",
    encrypt: (address) => bytesToAddress(aes.encrypt(addressToBytes(address))),
    decrypt: (address) => bytesToAddress(aes.decrypt(addressToBytes(address))),
  };
}

/** Bit `index` of 16 bytes, counted from the most significant bit of byte 0. */
function bitAt(bytes: Uint8Array, index: number): number {
  return (bytes[index >> 3] >> (7 - (index & 7))) & 1;
}

/**
 * The padded prefix of the draft's pfx algorithm before bit `start` (0 for IPv6, 96 for an
 * IPv4-mapped address): the 128-bit value `1 << start | first start bits`, as four
 * big-endian 32-bit words. For 96 that is a 1 at bit 96 and the mapped prefix's ffff.
 */
function initialPaddedPrefix(start: number): Uint32Array {
  return start === 0 ? Uint32Array.of(0, 0, 0, 1) : Uint32Array.of(1, 0, 0, 0xffff);
}

/** The padded prefix one bit longer: shifted left by one, `bit` in at the bottom. */
function appendBit(words: Uint32Array, bit: number): void {
  words[0] = (words[0] << 1) | (words[1] >>> 31);
  words[1] = (words[1] << 1) | (words[2] >>> 31);
  words[2] = (words[2] << 1) | (words[3] >>> 31);
  words[3] = (words[3] << 1) | bit;
}

function writeBlock(view: DataView, offset: number, words: Uint32Array): void {
  for (let i = 0; i < 4; i++) view.setUint32(offset + 4 * i, words[i]);
}

/**
 * ipcrypt-pfx. Encryption knows every original bit up front, so all the padded prefixes
 * (32 blocks for IPv4, 128 for IPv6) go through each AES key in one call; decryption
 * learns each original bit from the one before, so it goes block by block.
 */
export function createPfxCipher(key: Uint8Array): IpCipher {
  if (key.length !== IPCRYPT_KEY_BYTES.pfx) throw new IpcryptKeyError(`${SPEC_NAMES.pfx} needs a 32-byte key`);
  const k1 = aes128(key.subarray(0, 16));
  const k2 = aes128(key.subarray(16, 32));
  const blocks = new Uint8Array(128 * BLOCK_BYTES);
  const view = new DataView(blocks.buffer);
  const block = new Uint8Array(BLOCK_BYTES);
  const blockView = new DataView(block.buffer);

  function encryptBytes(original: Uint8Array): Uint8Array {
    const start = isIpv4Mapped(original) ? IPV4_MAPPED_PREFIX_BITS : 0;
    const count = 128 - start;
    const prefix = initialPaddedPrefix(start);
    for (let i = 0; i < count; i++) {
      writeBlock(view, i * BLOCK_BYTES, prefix);
      appendBit(prefix, bitAt(original, start + i));
    }
    const input = blocks.subarray(0, count * BLOCK_BYTES);
    const e1 = k1.encrypt(input);
    const e2 = k2.encrypt(input);
    const encrypted = Uint8Array.from(original);
    for (let i = 0; i < count; i++) {
      // The PRF's output bit is the least significant bit of e1 XOR e2: the last byte's.
      const last = i * BLOCK_BYTES + BLOCK_BYTES - 1;
      const index = start + i;
      encrypted[index >> 3] ^= ((e1[last] ^ e2[last]) & 1) << (7 - (index & 7));
    }
    return encrypted;
  }

  function decryptBytes(encrypted: Uint8Array): Uint8Array {
    const start = isIpv4Mapped(encrypted) ? IPV4_MAPPED_PREFIX_BITS : 0;
    const prefix = initialPaddedPrefix(start);
    const original = Uint8Array.from(encrypted);
    for (let index = start; index < 128; index++) {
      writeBlock(blockView, 0, prefix);
      const e1 = k1.encrypt(block);
      const e2 = k2.encrypt(block);
      original[index >> 3] ^= ((e1[15] ^ e2[15]) & 1) << (7 - (index & 7));
      appendBit(prefix, bitAt(original, index));
    }
    return original;
  }

  return {
    mode: "pfx",
    encrypt: (address) => bytesToAddress(encryptBytes(addressToBytes(address))),
    decrypt: (address) => bytesToAddress(decryptBytes(addressToBytes(address))),
  };
}
