/**
 * `--env-file PATH`, which every command takes: variables read from a file of `KEY=value`
 * lines (as `.env.example` is written), parsed by Node's own `util.parseEnv` (quotes,
 * comments, `export`, multi-line values), which Deno's `node:util` provides too.
 *
 * Flags > environment > env file > defaults: a variable already set wins over the file,
 * as with Node's own `--env-file`, so one value of a file can be overridden for one run.
 * No file is read unless named: a `.env` found in whatever folder the tool was started
 * from is not a configuration anybody chose.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import process from "node:process";
import { parseEnv } from "node:util";
import { ConfigError } from "./errors.ts";

const FLAG = "--env-file";

/**
 * Take every `--env-file PATH` (or `--env-file=PATH`) out of the arguments, wherever it stands.
 *
 * @returns the other arguments, in order, and the paths, in order
 * @throws {ConfigError} for `--env-file` without a path
 */
export function takeEnvFiles(argv: readonly string[]): { argv: string[]; paths: string[] } {
  const rest: string[] = [];
  const paths: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg.startsWith(`${FLAG}=`)) paths.push(arg.slice(FLAG.length + 1));
    else if (arg === FLAG) paths.push(argv[++i] ?? "");
    else {
      rest.push(arg);
      continue;
    }
    if (paths.at(-1) === "" || paths.at(-1)!.startsWith("--")) {
      throw new ConfigError(`${FLAG} needs a path: ${FLAG} .env`);
    }
  }
  return { argv: rest, paths };
}

/** One file's variables; the error names the path and what is wrong, never a value. */
function readEnvFile(path: string): Record<string, string> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === "ENOENT") throw new ConfigError(`${FLAG} ${path}: no such file`);
    if (code === "EISDIR") throw new ConfigError(`${FLAG} ${path} is a folder: give the file`);
    if (code === "EACCES") throw new ConfigError(`${FLAG} ${path}: this user may not read it`);
    throw error;
  }
  return parseEnv(text) as Record<string, string>;
}

/**
 * The environment with the files' variables added where it has none (a later file wins over
 * an earlier one). They go into `process.env` too, where unset: the AWS SDK reads its
 * region, credentials and endpoint there itself.
 *
 * @throws {ConfigError} for a file that cannot be read
 */
export function withEnvFiles(
  paths: readonly string[],
  env: Record<string, string | undefined>,
): Record<string, string | undefined> {
  if (paths.length === 0) return env;
  const fromFiles: Record<string, string> = Object.assign({}, ...paths.map(readEnvFile));
  const merged = { ...env };
  for (const [name, value] of Object.entries(fromFiles)) {
    if (merged[name] !== undefined) continue;
    merged[name] = value;
    if (process.env[name] === undefined) process.env[name] = value;
  }
  return merged;
}
