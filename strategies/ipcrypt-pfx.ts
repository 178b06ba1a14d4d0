/**
 * `ipcrypt-pfx`: `ip` encrypted with ipcrypt-pfx (draft-denis-ipcrypt), prefix-preserving:
 * two addresses that share their first n bits encrypt to two addresses that share their
 * first n bits, and IPv4 stays IPv4. Analysts can group by /24 or /64, see that a user's
 * network changed, or spot a block that logs in too often, without seeing an address.
 *
 * That is also what it leaks, by design: shared prefixes. Two users on the same /24 are
 * linkable at /24, and the tree of prefixes (how many addresses under each) is visible.
 * Whoever holds the key can decrypt every mask (`scripts/ipcrypt.ts decrypt --mode pfx`).
 *
 * ```sh
 * MASK_IPCRYPT_KEY=$(openssl rand -hex 32) MASK_HMAC_KEY=$(openssl rand -hex 32) \
 *   npx tsx mod.ts --strategy ipcrypt-pfx --drain ...
 * ```
 *
 * The key is 32 bytes (two AES-128 keys) whose halves must differ. `device_id` is masked
 * exactly as the `hmac` strategy masks it.
 *
 * @module
 */
import type { MaskStrategy, StrategyOptions } from "../src/contract.ts";
import { createIpcryptStrategy } from "./ipcrypt.ts";

/** Create the strategy from `MASK_IPCRYPT_KEY` (32 bytes, hex) and `MASK_HMAC_KEY`. */
export function create(options: StrategyOptions): MaskStrategy {
  return createIpcryptStrategy("pfx", "ipcrypt-pfx", options);
}
