/**
 * `npm run bundle`: the tool as one self-contained ESM file, `dist/sqs-login-masker.mjs`,
 * for a machine that has Node 24 (or Deno) and nothing else: copy the file, run it.
 *
 * Every dependency is inside; only Node's built-ins stay imports. The CommonJS ones (the
 * AWS SDK, pg) get a `require` made from the file's own URL. A release artifact: built, never
 * committed (dist/ is ignored).
 *
 * @module
 */
import { mkdir, stat } from "node:fs/promises";
import { dirname, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { build } from "esbuild";
import { runScript } from "./_command.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
export const BUNDLE = "dist/sqs-login-masker.mjs";

/** `--out FILE` puts the bundle elsewhere (a test's own folder, the bench's scratch). */
async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { out: { type: "string" } } });
  const outfile = resolve(values.out ?? `${ROOT}${BUNDLE}`);
  await mkdir(dirname(outfile), { recursive: true });
  const result = await build({
    absWorkingDir: ROOT,
    entryPoints: ["mod.ts"],
    outfile,
    bundle: true,
    format: "esm",
    platform: "node",
    target: "node24",
    minify: false,
    legalComments: "eof",
    logLevel: "warning",
    banner: {
      js: [
        "#!/usr/bin/env node",
        'import { createRequire as __bundleRequire } from "node:module";',
        "const require = __bundleRequire(import.meta.url);",
      ].join("\n"),
    },
  });
  if (result.errors.length > 0) return 1;
  const { size } = await stat(outfile);
  process.stdout.write(`${relative(process.cwd(), outfile)}: ${(size / 1024 / 1024).toFixed(1)} MiB\n`);
  return 0;
}

if (import.meta.main) process.exitCode = await runScript(() => main(process.argv.slice(2)));
