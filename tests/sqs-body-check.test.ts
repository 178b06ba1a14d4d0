/**
 * Message bodies against SQS's MD5 digests: checked over plain http, where nothing else
 * would notice a changed byte, and left to TLS over https. A proxy in front of the real
 * emulator changes one byte of every body it hands out, keeping the digest.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { join } from "node:path";
import { SendMessageCommand } from "@aws-sdk/client-sqs";
import { afterEach, describe, expect, it } from "vitest";
import { emulatorEnv } from "../scripts/embedded.ts";
import { createFixture, emptyTempDir, type Fixture, ROOT, runCommand } from "./helpers.ts";

let f: Fixture | undefined;
let server: Server | undefined;
afterEach(async () => {
  await new Promise((resolve) => server ? server.close(resolve) : resolve(undefined));
  server = undefined;
  await f?.close();
  f = undefined;
});

/** Forward every call to the emulator; in each message received, change the body's first byte. */
function corrupting(target: string) {
  return async (request: IncomingMessage, response: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const headers = Object.fromEntries(
      Object.entries(request.headers).filter(([name]) => !["host", "connection", "content-length"].includes(name)),
    ) as Record<string, string>;
    const answer = await fetch(target + request.url, { method: request.method, headers, body: Buffer.concat(chunks) });
    let text = await answer.text();
    if (String(request.headers["x-amz-target"]).endsWith(".ReceiveMessage")) {
      const parsed = JSON.parse(text) as { Messages?: Array<{ Body: string }> };
      for (const m of parsed.Messages ?? []) m.Body = (m.Body[0] === "{" ? "[" : "{") + m.Body.slice(1);
      text = JSON.stringify(parsed);
    }
    response.writeHead(answer.status, { "content-type": answer.headers.get("content-type") ?? "application/json" });
    response.end(text);
  };
}

async function listen(s: Server): Promise<number> {
  server = s;
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  return (s.address() as { port: number }).port;
}

/** A script that receives once through the tool's own client and prints what it got, or the error. */
const RECEIVE_ONCE = `
  import { ReceiveMessageCommand } from "@aws-sdk/client-sqs";
  import { createSqsClient } from "./src/sqs.ts";
  const sqs = createSqsClient();
  try {
    const { Messages = [] } = await sqs.send(new ReceiveMessageCommand({ QueueUrl: process.env.QUEUE_URL, WaitTimeSeconds: 1, VisibilityTimeout: 0 }));
    console.log(JSON.stringify(Messages.map((m) => m.Body)));
  } catch (error) {
    console.log("error: " + error.message);
  }`;

describe("SQS message bodies and their MD5", () => {
  it("over plain http a body changed on the way is refused, as the SDK's own check would", async () => {
    f = await createFixture();
    await f.sqs.send(new SendMessageCommand({ QueueUrl: f.queueUrl, MessageBody: '{"user_id":"u"}' }));
    const port = await listen(createHttpServer(corrupting(f.endpoint)));
    const queueUrl = f.queueUrl.replace(new URL(f.queueUrl).origin, `http://127.0.0.1:${port}`);
    const run = await runCommand(process.execPath, ["--input-type=module", "-e", RECEIVE_ONCE], {
      ...emulatorEnv(`http://127.0.0.1:${port}`),
      QUEUE_URL: queueUrl,
    });
    expect(run.stdout).toMatch(/^error: Invalid MD5 checksum on messages: /);
    // Straight from the emulator, the same client takes it.
    const direct = await runCommand(process.execPath, ["--input-type=module", "-e", RECEIVE_ONCE], {
      ...emulatorEnv(f.endpoint),
      QUEUE_URL: f.queueUrl,
    });
    expect(direct.stdout).toBe('["{\\"user_id\\":\\"u\\"}"]\n');
  });

  it("over https the tool leaves integrity to TLS and spends no MD5 on bodies", async () => {
    f = await createFixture();
    await f.sqs.send(new SendMessageCommand({ QueueUrl: f.queueUrl, MessageBody: '{"user_id":"u"}' }));
    // A proxy with a certificate of its own, trusted by the child: it stands for a
    // man-in-the-middle the child cannot see, so what it changes shows whether the child
    // still hashes bodies over https.
    const dir = await emptyTempDir();
    execFileSync("openssl", [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=127.0.0.1",
      "-addext",
      "subjectAltName=IP:127.0.0.1",
      "-keyout",
      join(dir, "key.pem"),
      "-out",
      join(dir, "cert.pem"),
    ], { stdio: "ignore" });
    const tls = { key: readFileSync(join(dir, "key.pem")), cert: readFileSync(join(dir, "cert.pem")) };
    const port = await listen(createHttpsServer(tls, corrupting(f.endpoint)));
    const queueUrl = f.queueUrl.replace(new URL(f.queueUrl).origin, `https://127.0.0.1:${port}`);
    const run = await runCommand(process.execPath, ["--input-type=module", "-e", RECEIVE_ONCE], {
      ...emulatorEnv(`https://127.0.0.1:${port}`),
      QUEUE_URL: queueUrl,
      NODE_EXTRA_CA_CERTS: join(dir, "cert.pem"),
    }, ROOT);
    expect(run.stdout, run.stderr).toBe('["[\\"user_id\\":\\"u\\"}"]\n');
  });
});
