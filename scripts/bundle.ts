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
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { runScript } from "./_command.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
export const BUNDLE = "dist/sqs-login-masker.mjs";

async function main(): Promise<number> {
  await mkdir(`${ROOT}dist`, { recursive: true });
  const result = await build({
    absWorkingDir: ROOT,
    entryPoints: ["mod.ts"],
    outfile: BUNDLE,
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
  const { size } = await stat(`${ROOT}${BUNDLE}`);
  process.stdout.write(`${BUNDLE}: ${(size / 1024 / 1024).toFixed(1)} MiB\n`);
  return 0;
}

if (import.meta.main) process.exitCode = await runScript(main);
