/**
 * `vault`: not built yet (issue 3).
 *
 * @module
 */
import type { MaskStrategy } from "../mod.ts";

export function create(): MaskStrategy {
  throw new Error("The vault strategy is not available yet: use --strategy hmac");
}
