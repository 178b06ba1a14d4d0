/**
 * Decrypt `masked_ip` values written by the `ipcrypt` and `ipcrypt-pfx` strategies. No
 * vault table is involved: the key alone decrypts, so whoever holds `MASK_IPCRYPT_KEY` can
 * decrypt every address ever masked under it.
 *
 * ```sh
 * MASK_IPCRYPT_KEY=... sqs-login-masker ipcrypt decrypt --database-url postgres://... --mode pfx 19.214.210.244
 * ```
 *
 * With `--database-url` (or `DATABASE_URL`) the key is first checked against the mask
 * recorded with `user_logins`, and a key the table was not masked with is refused: any key
 * of the right length decrypts to addresses that look right. Without it nothing checks the
 * key, and a warning says so. Prints each original on its own line, in the order given,
 * in canonical form; every argument is checked before anything is printed.
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { DatabasePool } from "slonik";
import { createDatabasePool } from "../database.ts";
import { ConfigError, failed } from "../errors.ts";
import { readMaskRecord } from "../mask-record.ts";
import { describeStartupError } from "../postgres-errors.ts";
import { AddressError } from "../ip.ts";
import {
  createIpCipher,
  IPCRYPT_KEY_VARIABLE,
  IPCRYPT_MODES,
  IpcryptKeyError,
  type IpcryptMode,
  readIpcryptKey,
} from "../../strategies/_ipcrypt.ts";
import { ipKeyFingerprint } from "../../strategies/ipcrypt.ts";

export const HELP = `Usage: sqs-login-masker ipcrypt decrypt [--database-url URL] --mode deterministic|pfx ADDRESS...
       (from a checkout: npx tsx mod.ts ipcrypt decrypt …, or npx tsx scripts/ipcrypt.ts decrypt …)

Print the original address behind each masked_ip, one per line, in the order given.

  --database-url URL     the database whose user_logins the addresses come from: the key
                         is checked against the mask recorded with it first, and a key the
                         table was not masked with is refused    [env DATABASE_URL]
  --mode deterministic   for rows written with --strategy ipcrypt     (16-byte key)
  --mode pfx             for rows written with --strategy ipcrypt-pfx (32-byte key)
  --env-file PATH        read MASK_IPCRYPT_KEY from a file
  -h, --help             show this help

The key is read from ${IPCRYPT_KEY_VARIABLE} (hex), the one the rows were written with.
Without --database-url nothing checks the key: any key of the right length decrypts
every address to another address that looks just as real, and a warning says so.
Whoever holds that key can decrypt every address masked under it: keep it in a secret
store, apart from the database.
Exit codes: 0 printed, 1 database error, 2 usage, key (one the table was not masked
with included) or address error. No address is printed on an error.
`;

class UsageError extends Error {
  override name = "UsageError";
}

/** What to decrypt, as given on the command line. */
export interface DecryptRequest {
  mode: IpcryptMode;
  addresses: string[];
  /** The database to check the key against; without it the key is not checked. */
  databaseUrl?: string;
}

/**
 * Parse `decrypt --mode MODE ADDRESS...`.
 *
 * @returns the request, or `"help"`
 * @throws {UsageError} naming what is wrong
 */
function parseCommand(argv: readonly string[], env: Record<string, string | undefined>): DecryptRequest | "help" {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: {
        mode: { type: "string" },
        "database-url": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message.split("\n")[0]!);
  }
  const { values, positionals } = parsed;
  if (values.help) return "help";
  const [command, ...addresses] = positionals;
  if (command !== "decrypt") {
    throw new UsageError(command === undefined ? "no command given: use decrypt" : "unknown command: use decrypt");
  }
  const mode = values.mode as IpcryptMode | undefined;
  if (mode === undefined || !IPCRYPT_MODES.includes(mode)) {
    throw new UsageError(`--mode must be ${IPCRYPT_MODES.join(" or ")}`);
  }
  if (addresses.length === 0) throw new UsageError("no address given: decrypt --mode MODE ADDRESS...");
  const databaseUrl = (values["database-url"] ?? env.DATABASE_URL)?.trim() || undefined;
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new UsageError("--database-url (or DATABASE_URL) must start with postgres:// or postgresql://");
  }
  return { mode, addresses, databaseUrl };
}

/** The strategy whose rows each mode decrypts. */
const STRATEGY_OF_MODE: Readonly<Record<IpcryptMode, string>> = { deterministic: "ipcrypt", pfx: "ipcrypt-pfx" };

/**
 * Check a key against the mask recorded with the database's `user_logins`: the table's
 * strategy must be the mode's, and the `ip` part of its fingerprint this key's.
 *
 * @throws {ConfigError} one line naming both sides (never the key) when the key is not the table's
 */
export async function checkDecryptKey(pool: DatabasePool, mode: IpcryptMode, key: Uint8Array): Promise<void> {
  const record = await readMaskRecord(pool);
  const strategy = STRATEGY_OF_MODE[mode];
  if (!record) {
    throw new ConfigError(
      `user_logins has no recorded mask to check ${IPCRYPT_KEY_VARIABLE} against: run the loader on it once (it records its mask), or decrypt without --database-url at your own risk`,
    );
  }
  if (record.strategy !== strategy) {
    throw new ConfigError(
      `${record.table} is masked by ${record.strategy}, not ${strategy}: --mode ${mode} decrypts rows written with --strategy ${strategy}; nothing decrypted`,
    );
  }
  const table = record.fingerprint?.split(" ")[0];
  const mine = ipKeyFingerprint(key);
  if (table !== mine) {
    throw new ConfigError(
      `${IPCRYPT_KEY_VARIABLE} is not the key ${record.table} was masked with (its fingerprint ${table}, this key's ${mine}): nothing decrypted`,
    );
  }
}

/**
 * Decrypt every address, or none, after checking the key against the table when the
 * request names a database.
 *
 * @returns the originals, and whether the key was checked
 * @throws {ConfigError} when the key is not the table's; {@link AddressError} as {@link decryptAll}
 */
export async function decryptChecked(
  request: DecryptRequest,
  key: Uint8Array,
): Promise<{ originals: string[]; checked: boolean }> {
  if (request.databaseUrl === undefined) return { originals: decryptAll(request, key), checked: false };
  const pool = await createDatabasePool(request.databaseUrl, 1);
  try {
    await checkDecryptKey(pool, request.mode, key);
  } finally {
    await pool.end();
  }
  return { originals: decryptAll(request, key), checked: true };
}

/**
 * Decrypt every address, or none.
 *
 * @throws {AddressError} naming the argument (by position, not its text) that is no address
 */
export function decryptAll(request: DecryptRequest, key: Uint8Array): string[] {
  const cipher = createIpCipher(request.mode, key);
  return request.addresses.map((address, i) => {
    try {
      return cipher.decrypt(address);
    } catch (error) {
      if (error instanceof AddressError) {
        throw new AddressError(`address ${i + 1} of ${request.addresses.length}: ${error.message}`);
      }
      throw error;
    }
  });
}

/** Printed when nothing checked the key, before what it decrypted. */
const UNCHECKED_WARNING =
  `warning: ${IPCRYPT_KEY_VARIABLE} was not checked (no --database-url or DATABASE_URL): a wrong key of the right length prints wrong addresses that look right\n`;

export async function main(argv: readonly string[], env: Record<string, string | undefined>): Promise<number> {
  let request: DecryptRequest | "help" | undefined;
  try {
    request = parseCommand(argv, env);
    if (request === "help") {
      process.stdout.write(HELP);
      return 0;
    }
    const { originals, checked } = await decryptChecked(request, readIpcryptKey(env, request.mode));
    if (!checked) process.stderr.write(UNCHECKED_WARNING);
    process.stdout.write(originals.map((original) => original + "\n").join(""));
    return 0;
  } catch (error) {
    if (error instanceof UsageError) {
      return failed(error, {
        usage: true,
        describe: () => `${error.message} (run with --help)`,
      });
    }
    if (error instanceof IpcryptKeyError || error instanceof AddressError) return failed(error, { usage: true });
    const databaseUrl = typeof request === "object" ? request.databaseUrl ?? "" : "";
    return failed(error, { describe: (e) => describeStartupError(e, databaseUrl) });
  }
}
