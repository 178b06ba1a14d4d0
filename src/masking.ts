/**
 * Masking: the registry of strategies (the built-ins by name, a user's module by path),
 * and the masking of a record, which refuses a strategy's output that would leak its input
 * or not fit the column. The only file that loads `strategies/`.
 *
 * @module
 */
import type { MaskedValue, MaskStrategy, PiiField, StrategyModule, StrategyOptions } from "./contract.ts";
import { ConfigError, FatalError, firstLineScrubbed, redactValues } from "./errors.ts";
import { type LoginRecord, textProblem, type UserLoginRow } from "./schema.ts";

export const DEFAULT_STRATEGY = "hmac";
const BUILT_IN_STRATEGIES: Record<string, () => Promise<StrategyModule>> = {
  hmac: () => import("../strategies/hmac.ts"),
  sha256: () => import("../strategies/sha256.ts"),
  vault: () => import("../strategies/vault.ts"),
  ipcrypt: () => import("../strategies/ipcrypt.ts"),
  "ipcrypt-pfx": () => import("../strategies/ipcrypt-pfx.ts"),
};

/** Names of the built-in strategies, for help and error text. */
export const STRATEGY_NAMES: string[] = Object.keys(BUILT_IN_STRATEGIES);

/**
 * Load a strategy by built-in name or by module path, and create it.
 *
 * @param nameOrPath a built-in name (`STRATEGY_NAMES`), or a path to a module exporting `create`
 * @param options passed to the strategy's `create`
 * @returns the ready strategy
 * @throws {ConfigError} for an unknown name, a module without `create`, or bad options
 */
export async function loadStrategy(nameOrPath: string, options: StrategyOptions): Promise<MaskStrategy> {
  const isPath = /[\\/]|\.[cm]?[jt]s$/.test(nameOrPath);
  let module: Partial<StrategyModule> & { default?: Partial<StrategyModule> };
  if (!isPath) {
    const load = BUILT_IN_STRATEGIES[nameOrPath];
    if (!load) {
      throw new ConfigError(
        `Unknown strategy "${nameOrPath}": use one of ${STRATEGY_NAMES.join(", ")}, or a path to your own module`,
      );
    }
    module = await load();
  } else {
    const { pathToFileURL } = await import("node:url");
    const { resolve } = await import("node:path");
    try {
      module = await import(pathToFileURL(resolve(nameOrPath)).href);
    } catch (error) {
      const reason = error instanceof Error ? error.message.split("\n")[0] : String(error);
      throw new ConfigError(`Cannot load strategy module ${nameOrPath}: ${reason}`);
    }
  }
  const create = module.create ?? module.default?.create;
  if (typeof create !== "function") {
    throw new ConfigError(
      `Strategy module ${nameOrPath} does not export create(options): see strategies/hmac.ts for the interface`,
    );
  }
  let strategy: MaskStrategy;
  try {
    strategy = await create({ env: options.env });
  } catch (error) {
    throw new ConfigError(error instanceof Error ? error.message : String(error));
  }
  if (!strategy || typeof strategy.mask !== "function" || typeof strategy.name !== "string") {
    throw new ConfigError(`Strategy module ${nameOrPath}: create() must return { name, mask(value, field) }`);
  }
  return strategy;
}

/**
 * Mask one value and refuse output that would leak it: a strategy that returns the input,
 * or something containing it, or nothing that fits the column, is a broken strategy
 * (except that a format-preserving mask may equal or contain its input by chance).
 * A strategy that answers at once is not awaited: two awaits per message are a cost on the hot path.
 */
function maskValue(strategy: MaskStrategy, value: string, field: PiiField): string | Promise<string> {
  let masked: unknown;
  try {
    masked = strategy.mask(value, field);
  } catch (error) {
    throw maskFailure(strategy, value, field, error);
  }
  // Any thenable, as `await` took it: a strategy may return another library's promise.
  if (typeof (masked as PromiseLike<unknown> | null)?.then === "function") {
    return Promise.resolve(masked).then((m) => checkMasked(strategy, value, field, m), (error) => {
      throw maskFailure(strategy, value, field, error);
    });
  }
  return checkMasked(strategy, value, field, masked);
}

/** A strategy's error may name the value it was given: redact it before anyone logs it. */
function maskFailure(strategy: MaskStrategy, value: string, field: PiiField, error: unknown): FatalError {
  return new FatalError(
    `Strategy ${strategy.name} failed to mask ${field}: ${redactValues(firstLineScrubbed(error), [value])}`,
  );
}

function checkMasked(strategy: MaskStrategy, value: string, field: PiiField, masked: unknown): string {
  if (typeof masked !== "string" || textProblem(masked, { minChars: 1, maxChars: 256 }) !== undefined) {
    throw new FatalError(`Strategy ${strategy.name} returned no string of 1-256 characters for ${field}`);
  }
  if (strategy.formatPreserving?.includes(field)) return masked;
  // Short inputs can occur inside a hex digest by chance; long ones cannot.
  if (masked === value || (value.length >= 8 && masked.includes(value))) {
    throw new FatalError(`Strategy ${strategy.name} returned output containing the raw ${field}: refusing to write it`);
  }
  return masked;
}

/** A record masked and ready for its row. */
export interface MaskedRecord {
  record: LoginRecord;
  row: UserLoginRow;
  values: MaskedValue[];
}

/**
 * Mask a record with the strategy.
 *
 * @returns the row for `user_logins` and the masked values (for strategies that persist)
 */
export function maskRecord(strategy: MaskStrategy, record: LoginRecord): MaskedRecord | Promise<MaskedRecord> {
  const { ip, device_id } = record.message;
  const maskedIp = maskValue(strategy, ip, "ip");
  if (typeof maskedIp !== "string") {
    return maskedIp.then(async (m) => toMaskedRecord(record, m, await maskValue(strategy, device_id, "device_id")));
  }
  const maskedDeviceId = maskValue(strategy, device_id, "device_id");
  if (typeof maskedDeviceId !== "string") return maskedDeviceId.then((m) => toMaskedRecord(record, maskedIp, m));
  return toMaskedRecord(record, maskedIp, maskedDeviceId);
}

function toMaskedRecord(record: LoginRecord, maskedIp: string, maskedDeviceId: string): MaskedRecord {
  const { message } = record;
  return {
    record,
    row: {
      user_id: message.user_id,
      device_type: message.device_type,
      masked_ip: maskedIp,
      masked_device_id: maskedDeviceId,
      locale: message.locale ?? null,
      app_version: record.appVersion,
      create_date: record.createDate,
    },
    values: [
      { field: "ip", value: message.ip, masked: maskedIp },
      { field: "device_id", value: message.device_id, masked: maskedDeviceId },
    ],
  };
}
