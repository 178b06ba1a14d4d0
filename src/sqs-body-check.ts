/**
 * The check of message bodies against the MD5 digests SQS returns, made only where the
 * transport does not already authenticate every byte. Over https, TLS's record MACs reject
 * any byte changed between SQS and the tool, so the SDK's check (an MD5 of every body
 * received, ~2-4% of the tool's CPU) adds nothing there. Over plain http (LocalStack,
 * fauxqs, a proxy) nothing else would notice a changed byte, so the check stays.
 *
 * The SDK's own check is turned off (`md5: false`) and this one added: it learns the
 * request's protocol when the request is built, after the endpoint (or the queue URL the
 * SDK sends to) is resolved.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { SQSClient } from "@aws-sdk/client-sqs";

/** Set on a command's context once its request is known to go over plain http. */
const PLAIN_HTTP = Symbol("sqs-login-masker.plain-http");

const md5Hex = (text: string) => createHash("md5").update(text).digest("hex");

interface BodyDigest {
  id: string | undefined;
  body: string | undefined;
  digest: string | undefined;
}

/** Each body the tool received or sent, with the digest SQS gave for it. */
function digestsOf(commandName: string, input: Record<string, unknown>, output: Record<string, unknown>): BodyDigest[] {
  if (commandName === "ReceiveMessageCommand") {
    const messages = (output.Messages ?? []) as Array<{ MessageId?: string; Body?: string; MD5OfBody?: string }>;
    return messages.map((m) => ({ id: m.MessageId, body: m.Body, digest: m.MD5OfBody }));
  }
  if (commandName === "SendMessageCommand") {
    return [{
      id: output.MessageId as string,
      body: input.MessageBody as string,
      digest: output.MD5OfMessageBody as string,
    }];
  }
  if (commandName === "SendMessageBatchCommand") {
    const sent = new Map(
      ((input.Entries ?? []) as Array<{ Id: string; MessageBody: string }>).map((e) => [e.Id, e.MessageBody]),
    );
    const done = (output.Successful ?? []) as Array<{ Id: string; MessageId?: string; MD5OfMessageBody?: string }>;
    return done.map((e) => ({ id: e.MessageId, body: sent.get(e.Id), digest: e.MD5OfMessageBody }));
  }
  return [];
}

/**
 * Verify bodies on plain http, as the SDK would have, and trust TLS on https: for a client
 * made with `md5: false`. A mismatch throws the SDK's own error text ("Invalid MD5 checksum
 * on messages: …").
 */
export function verifyBodiesOnPlainHttp(client: SQSClient): void {
  const stack = client.middlewareStack;
  stack.add(
    (next, context) => async (args) => {
      const protocol = (args.request as { protocol?: string } | undefined)?.protocol;
      if (protocol === "http:") (context as Record<symbol, boolean>)[PLAIN_HTTP] = true;
      return await next(args);
    },
    { step: "finalizeRequest", name: "sqsLoginMaskerNoteProtocol", override: true },
  );
  stack.add(
    (next, context) => async (args) => {
      const result = await next(args);
      if (!(context as Record<symbol, boolean>)[PLAIN_HTTP]) return result;
      const wrong = digestsOf(
        context.commandName ?? "",
        args.input as unknown as Record<string, unknown>,
        result.output as unknown as Record<string, unknown>,
      ).filter((d) => d.body !== undefined && d.digest !== md5Hex(d.body));
      if (wrong.length > 0) throw new Error(`Invalid MD5 checksum on messages: ${wrong.map((d) => d.id).join(", ")}`);
      return result;
    },
    { step: "initialize", name: "sqsLoginMaskerVerifyBodies", override: true },
  );
}
