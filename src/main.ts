/**
 * The one command: `sqs-login-masker [options]` consumes (src/cli.ts); `sqs-login-masker
 * NAME …` runs the subcommand NAME (src/commands/registry.ts) with the arguments after it.
 * Every command takes `--env-file PATH` (src/env-file.ts), anywhere among its arguments.
 *
 * @module
 */
import { consumeCommand } from "./cli.ts";
import { SUBCOMMANDS } from "./commands/registry.ts";
import { takeEnvFiles, withEnvFiles } from "./env-file.ts";
import { ConfigError, failed } from "./errors.ts";
import { unsupportedNode } from "./runtime.ts";

/**
 * The command line: the installed `sqs-login-masker` command is this. Writes to stdout and
 * stderr; consuming handles SIGINT and SIGTERM.
 *
 * @param argv the arguments after the program name
 * @param env the environment
 * @returns the exit code: 0 done, 1 runtime failure, 2 usage or configuration error
 */
export async function main(argv: readonly string[], env: Record<string, string | undefined>): Promise<number> {
  try {
    return await dispatch(argv, env);
  } catch (error) {
    // Each command ends its own failures in its own words; what escapes one (an env file
    // that cannot be read, a command that fails to load) still ends as one line, not a stack.
    return failed(error);
  }
}

/** Read the env files, then run the command the first argument names, or consume. */
async function dispatch(argv: readonly string[], env: Record<string, string | undefined>): Promise<number> {
  const tooOld = unsupportedNode();
  if (tooOld) throw new Error(tooOld);
  const taken = takeEnvFiles(argv);
  const args = taken.argv;
  env = withEnvFiles(taken.paths, env);
  const [first, ...rest] = args;
  // The bare command takes no positional argument: a first word that is no flag names a subcommand.
  if (first === undefined || first.startsWith("-")) return await consumeCommand(args, env);
  const subcommand = Object.hasOwn(SUBCOMMANDS, first) ? SUBCOMMANDS[first] : undefined;
  if (!subcommand) {
    // Echoed only when it looks like a mistyped name: a pasted value may be raw PII.
    const what = /^[a-z][a-z0-9-]{0,31}$/.test(first)
      ? `Unknown command "${first}"`
      : "The first argument is no command";
    throw new ConfigError(
      `${what}: use one of ${Object.keys(SUBCOMMANDS).join(", ")}, or no command to consume; run with --help`,
    );
  }
  return await (await subcommand.load()).main(rest, env);
}
