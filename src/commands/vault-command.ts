/**
 * What the vault's commands (`recover.ts`, `forget.ts`, `rotate-vault-key.ts`) share:
 * flag parsing with `--database-url`, `--reason` and `--ticket`, and one-line errors with
 * the tool's exit codes. They write no audit row themselves: the database's functions do,
 * and set who and when.
 *
 * @module
 */
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import type { DatabasePool } from "slonik";
import { createDatabasePool } from "../database.ts";
import { ConfigError, describeDatabaseError, failed, redactUrl } from "../errors.ts";
import { classifyDatabaseError, describeStartupError, fatalDatabaseCause } from "../postgres-errors.ts";

/** A vault operation that could not be done as asked; the message says why and names no value. */
export class VaultError extends Error {
  override name = "VaultError";
}

/** Flags every vault command takes, after flags > environment are applied. */
export interface VaultArgs {
  databaseUrl: string;
  reason: string;
  ticket: string;
  help: boolean;
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

/**
 * Parse a vault command's flags: `--database-url` (or `DATABASE_URL`), `--reason` and
 * `--ticket` (both required unless `reasonOptional`), `--help`, and the command's own.
 *
 * @throws {ConfigError} naming the flag and how to fix it
 */
export function parseVaultArgs(
  argv: readonly string[],
  env: Record<string, string | undefined>,
  options: { flags?: ParseArgsOptionsConfig; positionals?: boolean; reasonOptional?: boolean } = {},
): VaultArgs {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: {
        "database-url": { type: "string" },
        reason: { type: "string" },
        ticket: { type: "string" },
        help: { type: "boolean", short: "h" },
        ...options.flags,
      },
      strict: true,
      allowPositionals: options.positionals === true,
    });
  } catch (error) {
    const message = error instanceof Error ? error.message.split("\n")[0]!.replace(/\.$/, "") : String(error);
    throw new ConfigError(`${message}; run with --help to see the flags`);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  const help = values.help === true;
  const databaseUrl = ((values["database-url"] as string | undefined) ?? env.DATABASE_URL ?? "").trim();
  const reason = ((values.reason as string | undefined) ?? "").trim();
  const ticket = ((values.ticket as string | undefined) ?? "").trim();
  const args = { databaseUrl, reason, ticket, help, values, positionals: parsed.positionals };
  if (help) return args;
  if (!databaseUrl) throw new ConfigError("No database given: pass --database-url URL or set DATABASE_URL");
  if (!/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ConfigError("--database-url must start with postgres:// or postgresql://");
  }
  if (options.reasonOptional) return args;
  if (!reason) throw new ConfigError('No reason given: pass --reason "TEXT"; it goes into the audit log');
  if (!ticket) {
    throw new ConfigError(
      "No ticket given: pass --ticket ID (the request or incident it answers); it goes into the audit log",
    );
  }
  return args;
}

/** Describe any failure of a vault command as one line that holds no value. */
export function describeVaultError(error: unknown, databaseUrl: string): string {
  if (error instanceof VaultError) return error.message;
  const cause = classifyDatabaseError(error) === "fatal" ? fatalDatabaseCause(error) : undefined;
  if (cause === "permission") {
    return `Permission denied at ${redactUrl(databaseUrl)}: ${
      describeDatabaseError(error)
    } (this role needs the grants of sqs-login-masker vault-roles; see docs/vault.md)`;
  }
  if (cause === "no-table") {
    return `The vault tables are missing at ${redactUrl(databaseUrl)}: ${
      describeDatabaseError(error)
    } (run the tool once with --strategy vault)`;
  }
  return describeStartupError(error, databaseUrl);
}

/**
 * Run a vault command: parse, open the pool, run, and map failures to one line on stderr
 * and an exit code (2 configuration, 1 runtime).
 */
export async function runVaultCommand(
  argv: readonly string[],
  env: Record<string, string | undefined>,
  help: string,
  parse: (argv: readonly string[], env: Record<string, string | undefined>) => VaultArgs,
  run: (pool: DatabasePool, args: VaultArgs) => Promise<void>,
): Promise<number> {
  let args: VaultArgs;
  try {
    args = parse(argv, env);
  } catch (error) {
    return failed(error, { usage: true });
  }
  if (args.help) {
    process.stdout.write(help);
    return 0;
  }
  let pool: DatabasePool | undefined;
  try {
    pool = await createDatabasePool(args.databaseUrl, 2);
    await run(pool, args);
    return 0;
  } catch (error) {
    return failed(error, { describe: (e) => describeVaultError(e, args.databaseUrl) });
  } finally {
    await pool?.end().catch(() => {});
  }
}
