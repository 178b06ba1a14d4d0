/**
 * Sample login messages, and a producer that sends them to a queue.
 *
 * ```sh
 * AWS_ENDPOINT_URL=http://localhost:4566 AWS_REGION=us-east-1 \
 *   npx tsx scripts/produce.ts --queue-url http://localhost:4566/000000000000/login-queue --count 1000 --invalid 0.05
 * ```
 *
 * @module
 */
import { SendMessageBatchCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { parseCount, parseFlags, parseQueueUrl } from "../src/config.ts";
import { ConfigError, FatalError } from "../src/errors.ts";
import { createSqsClient, describeSqsError, inspectQueue } from "../src/sqs.ts";
import { runScript } from "./_command.ts";

/** A small seeded PRNG (mulberry32), so samples are the same from run to run. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const DEVICE_TYPES = ["android", "ios", "web", "windows", "macos"];
const LOCALES = ["RU", "US", "DE", "FR", "JP", "BR", "IN", null];

/** One valid login event, as a JSON-able object. */
export function sampleLogin(random: () => number): Record<string, unknown> {
  const int = (n: number) => Math.floor(random() * n);
  const hex = (n: number) => Array.from({ length: n }, () => int(16).toString(16)).join("");
  return {
    user_id: `${hex(8)}-${hex(4)}-4${hex(3)}-${hex(4)}-${hex(12)}`,
    app_version: `${int(10)}.${int(20)}.${int(100)}`,
    device_type: DEVICE_TYPES[int(DEVICE_TYPES.length)],
    ip: `${1 + int(223)}.${int(256)}.${int(256)}.${1 + int(254)}`,
    locale: LOCALES[int(LOCALES.length)],
    device_id: `${100 + int(900)}-${10 + int(90)}-${1000 + int(9000)}`,
  };
}

/** Valid messages at the edges of the contract: each must load. */
export const EDGE_CASE_BODIES: readonly string[] = [
  JSON.stringify({
    user_id: "edge-locale-missing",
    app_version: "0.0.0",
    device_type: "ios",
    ip: "10.0.0.1",
    device_id: "edge-device-0001",
  }),
  JSON.stringify({
    user_id: "edge-max-version",
    app_version: "99.99.99",
    device_type: "android",
    ip: "::1",
    locale: null,
    device_id: "edge-device-0002",
  }),
  JSON.stringify({
    user_id: "edge-ipv6",
    app_version: "1.2.3",
    device_type: "web",
    ip: "2001:db8::8a2e:370:7334",
    locale: "PT-BR",
    device_id: "edge-device-0003",
  }),
  JSON.stringify({
    user_id: "edge-unicode",
    app_version: "2.0.1",
    device_type: "android",
    ip: "8.8.8.8",
    locale: "日本",
    device_id: "устройство-ü-✓",
  }),
  JSON.stringify({
    user_id: "edge-extra-fields",
    app_version: "3.4.5",
    device_type: "ios",
    ip: "1.1.1.1",
    locale: "US",
    device_id: "edge-device-0005",
    foo: 1,
    nested: { a: [1] },
  }),
  JSON.stringify({
    user_id: "u".repeat(128),
    app_version: "10.20.30",
    device_type: "t".repeat(32),
    ip: "192.168.1.1",
    locale: "l".repeat(32),
    device_id: "x".repeat(256),
  }),
];

/** Invalid messages, each with the part of the reason the tool must give. */
export const INVALID_BODIES: ReadonlyArray<{ body: string; reason: string }> = [
  { body: "not json at all", reason: "body is not valid JSON" },
  { body: "", reason: "body is not valid JSON" },
  { body: "[1,2,3]", reason: "body is not a JSON object" },
  { body: JSON.stringify({ foo: "oops_wrong_msg_was_sent" }), reason: "user_id: required" },
  {
    body: JSON.stringify({
      user_id: "bad-ip",
      app_version: "1.0.0",
      device_type: "ios",
      ip: "999.1.1.1",
      locale: "US",
      device_id: "d",
    }),
    reason: "ip:",
  },
  {
    body: JSON.stringify({
      user_id: "bad-version",
      app_version: "2.3",
      device_type: "ios",
      ip: "1.2.3.4",
      locale: "US",
      device_id: "d",
    }),
    reason: "app_version:",
  },
  {
    body: JSON.stringify({
      user_id: "big-version",
      app_version: "100.0.0",
      device_type: "ios",
      ip: "1.2.3.4",
      locale: "US",
      device_id: "d",
    }),
    reason: "app_version:",
  },
  {
    body: JSON.stringify({
      user_id: "no-device",
      app_version: "1.0.0",
      device_type: "ios",
      ip: "1.2.3.4",
      locale: "US",
    }),
    reason: "device_id: required",
  },
  {
    body: JSON.stringify({
      user_id: "long-type",
      app_version: "1.0.0",
      device_type: "x".repeat(33),
      ip: "1.2.3.4",
      locale: "US",
      device_id: "d",
    }),
    reason: "device_type:",
  },
  {
    body: JSON.stringify({
      user_id: 42,
      app_version: "1.0.0",
      device_type: "ios",
      ip: "1.2.3.4",
      locale: "US",
      device_id: "d",
    }),
    reason: "user_id:",
  },
];

/**
 * A mix of valid, edge-case and invalid message bodies.
 *
 * @param count how many in all
 * @param invalidRatio share of invalid ones (0-1), cycling through `INVALID_BODIES`
 * @param seed for the PRNG
 */
export function sampleBodies(count: number, invalidRatio = 0, seed = 42): string[] {
  const random = seededRandom(seed);
  const bodies: string[] = [];
  let invalid = 0;
  let edge = 0;
  for (let i = 0; i < count; i++) {
    if (random() < invalidRatio) bodies.push(INVALID_BODIES[invalid++ % INVALID_BODIES.length]!.body);
    else if (invalidRatio > 0 && edge < EDGE_CASE_BODIES.length && random() < 0.1) {
      bodies.push(EDGE_CASE_BODIES[edge++]!);
    } else bodies.push(JSON.stringify(sampleLogin(random)));
  }
  return bodies;
}

/** Keeps the few most active users of {@link createLoginStream} from drowning the rest. */
const ZIPF_SHIFT = 10;

/** One user of {@link createLoginStream}: who they are, and the devices and addresses they use. */
interface StreamUser {
  user_id: string;
  app_version: string;
  locale: string | null;
  devices: Array<{ device_id: string; device_type: string }>;
  ips: string[];
}

/**
 * Logins as a real stream repeats them: a population of `users`, a few logging in very
 * often and most now and then, each from their own one or two devices and one to three
 * addresses (docs/benchmark.md gives the figures).
 *
 * - The user of each login has rank k with P(rank <= k) = ln((k + 10) / 10) / ln((users + 10) / 10):
 *   Zipf-Mandelbrot with exponent 1 and shift 10, drawn by inverting that for `u` uniform
 *   in [0, 1). With 10 000 users the most active makes ~1.4% of all logins, the top 10 ~10%,
 *   the top 100 ~35%, the top 1 000 ~67%.
 * - A user has 1 device (2 in one case of three) and 1 to 3 addresses, drawn once from the
 *   user's own seed; a login takes one of the devices at random, and the first address
 *   70% of the time, another one otherwise.
 *
 * @param seed the stream's seed: the same seed, the same stream
 * @returns a function giving the next body each time it is called
 */
export function createLoginStream(seed: number, users: number): () => string {
  const random = seededRandom(seed);
  const known = new Map<number, StreamUser>();
  const userOf = (rank: number): StreamUser => {
    let user = known.get(rank);
    if (!user) {
      const own = seededRandom(Math.imul(seed ^ 0x9e3779b9, 2654435761) ^ rank);
      const base = sampleLogin(own);
      const devices = Array.from({ length: own() < 1 / 3 ? 2 : 1 }, () => {
        const { device_id, device_type } = sampleLogin(own);
        return { device_id: String(device_id), device_type: String(device_type) };
      });
      const ips = Array.from({ length: 1 + Math.floor(own() * 3) }, () => String(sampleLogin(own).ip));
      user = {
        user_id: String(base.user_id),
        app_version: String(base.app_version),
        locale: base.locale as string | null,
        devices,
        ips,
      };
      known.set(rank, user);
    }
    return user;
  };
  return () => {
    const user = userOf(1 + Math.floor(ZIPF_SHIFT * ((users + ZIPF_SHIFT) / ZIPF_SHIFT) ** random() - ZIPF_SHIFT));
    const device = user.devices[Math.floor(random() * user.devices.length)]!;
    const ip = user.ips.length === 1 || random() < 0.7
      ? user.ips[0]!
      : user.ips[1 + Math.floor(random() * (user.ips.length - 1))]!;
    return JSON.stringify({
      user_id: user.user_id,
      app_version: user.app_version,
      device_type: device.device_type,
      ip,
      locale: user.locale,
      device_id: device.device_id,
    });
  };
}

/**
 * Send bodies in batches of 10, several batches in flight.
 *
 * @returns how many were sent
 */
export async function sendBodies(
  sqs: SQSClient,
  queueUrl: string,
  bodies: readonly string[],
  parallel = 16,
): Promise<number> {
  const groups: string[][] = [];
  for (let i = 0; i < bodies.length; i += 10) groups.push(bodies.slice(i, i + 10));
  let next = 0;
  let sent = 0;
  async function worker() {
    while (next < groups.length) {
      const group = groups[next++]!;
      const result = await sqs.send(
        new SendMessageBatchCommand({
          QueueUrl: queueUrl,
          // SQS refuses an empty body; a single space stands in for "nothing".
          Entries: group.map((body, i) => ({ Id: String(i), MessageBody: body === "" ? " " : body })),
        }),
      );
      if (result.Failed?.length) {
        throw new Error(`SendMessageBatch failed for ${result.Failed.length} entries: ${result.Failed[0]!.Code}`);
      }
      sent += group.length;
    }
  }
  await Promise.all(Array.from({ length: Math.min(parallel, groups.length) }, worker));
  return sent;
}

const HELP = `Usage: npx tsx scripts/produce.ts [options]

Send sample login messages to an SQS queue: valid ones, edge cases, and (on purpose) a
share of malformed ones, which the tool sends to the DLQ.

  --queue-url URL   the queue                                   [env QUEUE_URL]
  --count N         how many messages (default 100)
  --invalid R       the share of malformed ones, from 0 to 1 (default 0.1)
  --seed N          seed for the samples: the same seed sends the same bodies
                    (default: from the clock)
  -h, --help        show this help

AWS region, credentials and endpoint come from the SDK's default chain
(AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL for LocalStack or an emulator).

Exit codes: 0 sent, 1 runtime failure, 2 usage or configuration error.
`;

const MAX_COUNT = 1_000_000;

/** A share from 0 to 1, e.g. `--invalid 0.1`. */
function parseShare(raw: string | undefined, flag: string, fallback: number): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(value) || value < 0 || value > 1) {
    throw new ConfigError(`${flag} must be a share from 0 to 1, got "${raw}"`);
  }
  return value;
}

async function main(argv: readonly string[], env: Record<string, string | undefined>): Promise<number> {
  const values = parseFlags(argv, {
    "queue-url": { type: "string" },
    count: { type: "string" },
    invalid: { type: "string" },
    seed: { type: "string" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const count = parseCount(values.count as string | undefined, "--count", 100, 1, MAX_COUNT);
  const invalid = parseShare(values.invalid as string | undefined, "--invalid", 0.1);
  const seed = parseCount(values.seed as string | undefined, "--seed", Date.now() % 100_000, 0, 0xffff_ffff);
  const queueUrl = parseQueueUrl((values["queue-url"] as string | undefined) ?? env.QUEUE_URL);
  const sqs = createSqsClient();
  try {
    // The tool's own checks, so a missing region or an unreachable queue reads the same here.
    await inspectQueue(sqs, queueUrl, "--queue-url");
    const sent = await sendBodies(sqs, queueUrl, sampleBodies(count, invalid, seed)).catch((error: unknown) => {
      throw new FatalError(`Cannot send to ${queueUrl}: ${describeSqsError(error)}`);
    });
    process.stdout.write(`sent ${sent} messages to ${queueUrl}\n`);
    return 0;
  } finally {
    sqs.destroy();
  }
}

if (import.meta.main) process.exitCode = await runScript(() => main(process.argv.slice(2), process.env));
