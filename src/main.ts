/**
 * The one command: `sqs-login-masker [options]` consumes (src/cli.ts); `sqs-login-masker
 * NAME …` runs the subcommand NAME (src/commands/registry.ts) with the arguments after it.
 * Every command takes `--env-file PATH` (src/env-file.ts), anywhere among its arguments.
 *
 * @module
 */
import process from "node:process";
import { consumeCommand } from "./cli.ts";
import { SUBCOMMANDS } from "./commands/registry.ts";
import { takeEnvFiles, withEnvFiles } from "./env-file.ts";
import { ConfigError, EXIT_FAILURE, EXIT_USAGE } from "./errors.ts";
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
  const tooOld = unsupportedNode();
  if (tooOld) {
    process.stderr.write(`error: ${tooOld}\n`);
    return EXIT_FAILURE;
  }
  let args: string[];
  try {
    const taken = takeEnvFiles(argv);
    args = taken.argv;
    env = withEnvFiles(taken.paths, env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`error: ${error.message}\n`);
    return EXIT_USAGE;
  }
  const [first, ...rest] = args;
  // The bare command takes no positional argument: a first word that is no flag names a subcommand.
  if (first === undefined || first.startsWith("-")) return await consumeCommand(args, env);
  const subcommand = Object.hasOwn(SUBCOMMANDS, first) ? SUBCOMMANDS[first] : undefined;
  if (!subcommand) {
    // Echoed only when it looks like a mistyped name: a pasted value may be raw PII.
    const what = /^[a-z][a-z0-9-]{0,31}$/.test(first)
      ? `Unknown command "${first}"`
      : "The first argument is no command";
    process.stderr.write(
      `error: ${what}: use one of ${Object.keys(SUBCOMMANDS).join(", ")}, or no command to consume; run with --help\n`,
    );
    return EXIT_USAGE;
  }
  return await (await subcommand.load()).main(rest, env);
}
