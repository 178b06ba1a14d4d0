#!/usr/bin/env node
// The installed command. Plain JavaScript that old Nodes still parse, so that on a Node too
// old for the tool the user reads one line saying so, not a module or syntax error from a
// dependency. The tool itself is dist/mod.js, built from mod.ts when the package is packed.
import { readFileSync } from "node:fs";

const { engines } = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
const [needMajor, needMinor = 0] = /(\d+)(?:\.(\d+))?/.exec(engines.node).slice(1).filter(Boolean).map(Number);
const [major, minor] = process.versions.node.split(".").map(Number);
if (major < needMajor || (major === needMajor && minor < needMinor)) {
  process.stderr.write(
    `error: sqs-login-masker needs Node.js ${engines.node}; this is ${process.version}. ` +
      `Install Node.js ${needMajor} or newer (https://nodejs.org/en/download)\n`,
  );
  process.exit(1);
}

const { main } = await import("../dist/mod.js");
process.exitCode = await main(process.argv.slice(2), process.env);
