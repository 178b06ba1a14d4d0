/**
 * Decrypt `masked_ip` values written by the `ipcrypt` and `ipcrypt-pfx` strategies. No
 * vault table is involved: the key alone decrypts, so whoever holds `MASK_IPCRYPT_KEY` can
 * decrypt every address ever masked under it.
 *
 * ```sh
 * MASK_IPCRYPT_KEY=... npx tsx scripts/ipcrypt.ts decrypt --mode pfx 19.214.210.244 7cec:702c:1243:f70:1956:125:b9bd:1aba
 * ```
 *
 * Prints each original on its own line, in the order given, in canonical form. Every
 * argument is checked before anything is printed.
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  AddressError,
  createIpCipher,
  IPCRYPT_KEY_VARIABLE,
  IPCRYPT_MODES,
  IpcryptKeyError,
  type IpcryptMode,
  readIpcryptKey,
} from "../strategies/_ipcrypt.ts";

const HELP = `Usage: npx tsx scripts/ipcrypt.ts decrypt --mode deterministic|pfx ADDRESS...

Print the original address behind each masked_ip, one per line, in the order given.

  --mode deterministic   for rows written with --strategy ipcrypt     (16-byte key)
  --mode pfx             for rows written with --strategy ipcrypt-pfx (32-byte key)
  -h, --help             show this help

The key is read from ${IPCRYPT_KEY_VARIABLE} (hex), the one the rows were written with.
Whoever holds that key can decrypt every address masked under it: keep it in a secret
store, apart from the database.
Exit codes: 0 printed, 2 usage, key or address error (nothing printed).
`;

const EXIT_USAGE = 2;

class UsageError extends Error {
  override name = "UsageError";
}

/** What to decrypt, as given on the command line. */
export interface DecryptRequest {
  mode: IpcryptMode;
  addresses: string[];
}

/**
 * Parse `decrypt --mode MODE ADDRESS...`.
 *
 * @returns the request, or `"help"`
 * @throws {UsageError} naming what is wrong
 */
function parseCommand(argv: readonly string[]): DecryptRequest | "help" {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: { mode: { type: "string" }, help: { type: "boolean", short: "h" } },
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
  return { mode, addresses };
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

function main(argv: readonly string[], env: Record<string, string | undefined>): number {
  try {
    const request = parseCommand(argv);
    if (request === "help") {
      process.stdout.write(HELP);
      return 0;
    }
    const originals = decryptAll(request, readIpcryptKey(env, request.mode));
    process.stdout.write(originals.map((original) => original + "\n").join(""));
    return 0;
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`error: ${error.message} (run with --help)\n`);
      return EXIT_USAGE;
    }
    if (error instanceof IpcryptKeyError || error instanceof AddressError) {
      process.stderr.write(`error: ${error.message}\n`);
      return EXIT_USAGE;
    }
    throw error;
  }
}

if (import.meta.main) {
  process.exitCode = main(process.argv.slice(2), process.env);
}
