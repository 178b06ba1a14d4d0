/**
 * `ipcrypt`: `ip` encrypted with ipcrypt-deterministic (draft-denis-ipcrypt): AES-128 on
 * the address's 16 bytes, written back as an IPv6 address in RFC 5952 form. Equal
 * addresses give equal masks (`1.2.3.4` and `::ffff:1.2.3.4` are the same address), the
 * column still holds an address, and nothing about the network is kept: neighbours look
 * unrelated. Whoever holds the key can decrypt every mask (`scripts/ipcrypt.ts decrypt`).
 *
 * ```sh
 * MASK_IPCRYPT_KEY=$(openssl rand -hex 16) MASK_HMAC_KEY=$(openssl rand -hex 32) \
 *   npx tsx mod.ts --strategy ipcrypt --drain ...
 * ```
 *
 * `device_id` is masked exactly as the `hmac` strategy masks it (HMAC-SHA-256 under
 * `MASK_HMAC_KEY`), so `masked_device_id` joins across strategies.
 *
 * @module
 */
import { keyFingerprint, type MaskStrategy, type StrategyOptions } from "../src/contract.ts";
import { createIpCipher, type IpcryptMode, readIpcryptKey } from "./_ipcrypt.ts";
import { create as createHmac } from "./hmac.ts";

/**
 * The part of an ipcrypt strategy's fingerprint that stands for `MASK_IPCRYPT_KEY`, what
 * `scripts/ipcrypt.ts decrypt` checks a key against: `ip:` and the key's fingerprint.
 */
export function ipKeyFingerprint(key: Uint8Array): string {
  return `ip:${keyFingerprint(key)}`;
}

/**
 * An ipcrypt strategy of either mode: `ip` through the cipher, `device_id` through `hmac`.
 * Both keys are checked here, once, and both are in its fingerprint
 * (`ip:<MASK_IPCRYPT_KEY's> device_id:<MASK_HMAC_KEY's>`), so a change of either is refused.
 *
 * @throws {Error} for a missing or malformed `MASK_IPCRYPT_KEY` or `MASK_HMAC_KEY`, never quoting either
 */
export function createIpcryptStrategy(mode: IpcryptMode, name: string, { env }: StrategyOptions): MaskStrategy {
  const key = readIpcryptKey(env, mode);
  const cipher = createIpCipher(mode, key);
  const deviceIds = createHmac({ env });
  return {
    name,
    fingerprint: `${ipKeyFingerprint(key)} device_id:${deviceIds.fingerprint}`,
    mask: (value, field) => (field === "ip" ? cipher.encrypt(value) : deviceIds.mask(value, field)),
    // pfx maps an IPv4 address to an IPv4 address: now and then one to itself, or to one
    // that contains it ("96.71.140.14" -> "196.71.140.141"), which is a ciphertext, not a leak.
    ...(mode === "pfx" && { formatPreserving: ["ip"] as const }),
  };
}

/** Create the strategy from `MASK_IPCRYPT_KEY` (16 bytes, hex) and `MASK_HMAC_KEY`. */
export function create(options: StrategyOptions): MaskStrategy {
  return createIpcryptStrategy("deterministic", "ipcrypt", options);
}
