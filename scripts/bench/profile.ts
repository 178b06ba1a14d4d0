/**
 * Where a process's main thread spent its time, from V8's `.cpuprofile`: self time summed by
 * where the code lives (the SDK, Node's internals, garbage collection, pg and Slonik, the
 * project...). Given the profiles of the bare client and the tool from one bench run, it puts
 * them side by side in µs per message, which is what the tool adds and where.
 *
 * ```sh
 * BENCH_NODE_OPTIONS="--cpu-prof --cpu-prof-dir=.scratch/prof" \
 *   npm run bench -- --n 50000 --phases ceiling,tool --strategies hmac
 * npm run -s bench:profile -- --n 50000 .scratch/prof/<ceiling>.cpuprofile .scratch/prof/<tool>.cpuprofile
 * ```
 *
 * `--cpu-prof` samples the main thread by wall clock, so "idle" is time spent waiting, and
 * helper threads (the GC's concurrent marking, crypto) are not counted.
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { parseArgs } from "node:util";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Where a frame's code lives. The order matters: the first that matches names it. */
const PLACES: Array<[name: string, matches: (url: string, fn: string) => boolean]> = [
  ["garbage collection", (_, fn) => fn === "(garbage collector)"],
  ["idle", (_, fn) => fn === "(idle)"],
  ["V8, outside JavaScript", (_, fn) => fn === "(program)"],
  ["the AWS SDK", (url) => /node_modules\/(@smithy|@aws-sdk|@aws-crypto|fast-xml-parser)\//.test(url)],
  ["pg and Slonik", (url) => /node_modules\/(pg|pg-[a-z-]+|slonik|@slonik)\//.test(url)],
  ["TypeBox", (url) => url.includes("node_modules/@sinclair/")],
  ["pino and prom-client", (url) => /node_modules\/(pino|prom-client|sonic-boom|thread-stream)/.test(url)],
  ["other packages", (url) => url.includes("node_modules/")],
  ["socket writes", (url, fn) => url === "" && /^(writev|writeBuffer|writeUtf8String|writeLatin1String)$/.test(fn)],
  ["JSON.parse", (url, fn) => url === "" && fn === "parse"],
  ["start-up: loading modules, stripping types", (url) => /^(node:internal\/(modules|deps\/amaro)|wasm:)/.test(url)],
  ["Node's crypto", (url) => /^node:(crypto|internal\/crypto)/.test(url)],
  [
    "Node's HTTP, sockets and streams",
    (url) => /^node:(_http|http|https|net|internal\/(http|streams|stream_base|net))/.test(url),
  ],
  ["Node's internals, other", (url) => url.startsWith("node:")],
  ["native, other", (url) => url === ""],
  ["the project", () => true],
];

/** Self time in ms of each place, and the profile's length. */
export function summarise(profile: CpuProfile): { byPlace: Map<string, number>; totalMs: number } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const byPlace = new Map<string, number>(PLACES.map(([name]) => [name, 0]));
  for (const [id, us] of selfUs) {
    const { url, functionName } = byId.get(id)!.callFrame;
    const [name] = PLACES.find(([, matches]) => matches(url, functionName))!;
    byPlace.set(name, byPlace.get(name)! + us / 1000);
  }
  return { byPlace, totalMs: (profile.endTime - profile.startTime) / 1000 };
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({ options: { n: { type: "string" } }, allowPositionals: true });
  if (positionals.length === 0) {
    process.stderr.write("usage: npm run bench:profile -- [--n MESSAGES] <a.cpuprofile> [<b.cpuprofile> ...]\n");
    process.exit(2);
  }
  const n = values.n ? Number(values.n) : undefined;
  const summaries = await Promise.all(
    positionals.map(async (path) => summarise(JSON.parse(await readFile(path, "utf8")) as CpuProfile)),
  );
  const unit = n ? "µs/msg" : "ms";
  const cell = (ms: number, total: number) =>
    `${n ? (ms * 1000 / n).toFixed(1) : ms.toFixed(0)} (${(100 * ms / total).toFixed(1)}%)`;
  const lines = [
    `| where | ${positionals.map((p) => `${basename(p)}: ${unit}`).join(" | ")} |`,
    `| --- | ${positionals.map(() => "---:").join(" | ")} |`,
  ];
  for (const [name] of PLACES) {
    lines.push(`| ${name} | ${summaries.map((s) => cell(s.byPlace.get(name)!, s.totalMs)).join(" | ")} |`);
  }
  lines.push(`| all | ${summaries.map((s) => cell(s.totalMs, s.totalMs)).join(" | ")} |`);
  process.stdout.write(lines.join("\n") + "\n");
}

if (import.meta.main) await main();
