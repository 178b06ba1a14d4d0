/**
 * SQS: the client (region, credentials and endpoint from the SDK's default chain, nothing
 * invented), one deadline on every call, what the tool reads of a queue, and what an SQS
 * error means (wait it out, or stop with the fix).
 *
 * @module
 */
import { GetQueueAttributesCommand, SQSClient, type SQSClientConfig, SQSServiceException } from "@aws-sdk/client-sqs";
import { ConfigError, FatalError, firstLineScrubbed, networkErrorCode, redactUrl } from "./errors.ts";
import { type Logger, SILENT_LOGGER } from "./log.ts";
import { verifyBodiesOnPlainHttp } from "./sqs-body-check.ts";
import { deadlineSignal } from "./timing.ts";

/** SQS hands out at most 10 messages per receive and takes at most 10 entries per batch call. */
export const SQS_MAX_BATCH = 10;

/** SQS takes at most this many bytes in one message, and in one batch call (bodies and attributes together). */
export const SQS_MAX_BATCH_BYTES = 1_048_576;

/** SQS answers a call within this, or the call is given up (a half-open connection, a hung endpoint). */
export const SQS_CALL_DEADLINE_MS = 10_000;

/**
 * The SQS client. Region, credentials and endpoint come from the SDK's default chain;
 * nothing is invented here. The SDK sets no deadline of its own (a silent socket holds a
 * call forever): every call of the tool goes through `boundedSqsCall`.
 */
export function createSqsClient(logger: Logger = SILENT_LOGGER): SQSClient {
  // The SDK's info log carries request inputs and outputs, message bodies included: never
  // pass it on. Leaving `info` out (the SDK only calls `logger.info?.(…)`) also spares it a
  // filtered copy of every response. Its warnings go to our debug level; its error entries
  // hold the input too, so only the command is kept.
  const sdkLogger = {
    debug: () => {},
    warn: (...args: unknown[]) => logger.debug("aws sdk warning", { text: String(args[0]).split("\n")[0] }),
    error: (entry: unknown) =>
      logger.debug("aws sdk error", { command: (entry as { commandName?: string })?.commandName }),
  };
  // Bodies are checked against SQS's MD5 only where TLS does not already (sqs-body-check.ts).
  const client = new SQSClient({ md5: false, logger: sdkLogger as unknown as NonNullable<SQSClientConfig["logger"]> });
  verifyBodiesOnPlainHttp(client);
  return client;
}

/** An SQS call given up at its deadline: transient, waited out like any network fault. */
export class SqsDeadlineError extends Error {
  override name = "SqsDeadlineError";
}

/** What an SQS call is handed: the SDK's per-call options. */
export interface SqsCallOptions {
  abortSignal: AbortSignal;
}

/**
 * Make one SQS call with a deadline: past it the request is aborted (its socket destroyed)
 * and an `SqsDeadlineError` thrown. `signal` abandons it sooner (a stop), rethrowing the abort.
 * One timer per call, which covers the SDK's own retries and the response's body too
 * (the SDK's `requestTimeout` would add timers of its own per attempt, and end at the
 * response's headers).
 *
 * @param call sends the command with the options it is given
 * @param deadlineMs a long poll's is its wait plus `SQS_CALL_DEADLINE_MS`
 * @example
 * ```ts
 * await boundedSqsCall((options) => sqs.send(new GetQueueAttributesCommand({ QueueUrl }), options));
 * ```
 */
export async function boundedSqsCall<T>(
  call: (options: SqsCallOptions) => Promise<T>,
  deadlineMs = SQS_CALL_DEADLINE_MS,
  signal?: AbortSignal,
): Promise<T> {
  const deadline = deadlineSignal(deadlineMs, signal);
  try {
    return await call({ abortSignal: deadline.signal });
  } catch (error) {
    if (deadline.expired()) throw new SqsDeadlineError(`no answer within ${deadlineMs / 1000} s`);
    throw error;
  } finally {
    deadline.clear();
  }
}

/** What the tool needs to know about a queue before it starts. */
export interface QueueInfo {
  visibilityTimeoutSeconds: number;
  /** The largest message the queue takes, body and attributes, in bytes. */
  maximumMessageSize: number;
  /** SQS's own redrive policy: after `maxReceiveCount` receives it moves a message itself. */
  redrivePolicy?: { maxReceiveCount: number; deadLetterTargetArn: string };
  /** The queue's ARN, which a redrive policy names. */
  arn?: string;
}

/** What a queue without a redrive policy risks, and the fix: said at start, and by `check`. */
export const NO_REDRIVE_POLICY =
  "the queue has no RedrivePolicy: an invalid message that cannot go to a DLQ (none set, or too big for it) " +
  "comes back after every visibility timeout until the queue's retention drops it; give the queue a RedrivePolicy " +
  "(maxReceiveCount) so that SQS moves such messages to a DLQ itself";

/**
 * Check that a queue is reachable and read its visibility timeout, size limit, redrive policy and ARN.
 *
 * @throws {FatalError} with the fix: region, credentials, endpoint or queue name
 */
export async function inspectQueue(client: SQSClient, queueUrl: string, flag: string): Promise<QueueInfo> {
  try {
    await client.config.region();
  } catch {
    throw new ConfigError("AWS region is not set: set AWS_REGION (or a region in your AWS profile)");
  }
  try {
    const { Attributes = {} } = await boundedSqsCall((options) =>
      client.send(
        new GetQueueAttributesCommand({
          QueueUrl: queueUrl,
          AttributeNames: ["VisibilityTimeout", "MaximumMessageSize", "RedrivePolicy", "QueueArn"],
        }),
        options,
      )
    );
    return {
      visibilityTimeoutSeconds: Number(Attributes.VisibilityTimeout ?? 30),
      maximumMessageSize: Number(Attributes.MaximumMessageSize ?? SQS_MAX_BATCH_BYTES),
      redrivePolicy: parseRedrivePolicy(Attributes.RedrivePolicy),
      arn: Attributes.QueueArn,
    };
  } catch (error) {
    throw new FatalError(`Cannot use ${flag} ${redactUrl(queueUrl)}: ${describeSqsError(error)}`);
  }
}

function parseRedrivePolicy(raw: string | undefined): QueueInfo["redrivePolicy"] {
  if (!raw) return undefined;
  try {
    const { maxReceiveCount, deadLetterTargetArn } = JSON.parse(raw);
    return Number(maxReceiveCount) > 0
      ? { maxReceiveCount: Number(maxReceiveCount), deadLetterTargetArn: String(deadLetterTargetArn) }
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The error's code as SQS's model names it (`OverLimit`, `QueueDoesNotExist`). SQS speaks
 * JSON but stays compatible with its old query protocol: it sends the old code too
 * (`AWS.SimpleQueueService.OverLimit`, in `x-amzn-query-error`), and the SDK then hands
 * out a plain `SQSServiceException` named by the old code, not the modelled class. The
 * model's name is in the body's `__type`, whichever the SDK chose.
 */
export function sqsErrorCode(error: unknown): string | undefined {
  if (!(error instanceof SQSServiceException)) return undefined;
  const type = (error as { __type?: unknown }).__type;
  if (typeof type === "string" && type.includes("#")) return type.slice(type.lastIndexOf("#") + 1);
  return error.name.replace(/^AWS\.SimpleQueueService\./, "");
}

/** Codes worth waiting out: SQS's own (its in-flight limit passes as messages are deleted), and AWS's common ones. */
const TRANSIENT_CODES = new Set([
  "OverLimit",
  "RequestThrottled",
  "KmsThrottled",
  "ThrottlingException",
  "Throttling",
  "TooManyRequestsException",
  "RequestTimeout",
  "RequestTimeoutException",
  "ServiceUnavailable",
  "InternalError",
  "InternalFailure",
]);
/** AWS's common codes for credentials refused, and the SDK's credential chain finding none. */
const CREDENTIAL_CODES = new Set([
  "CredentialsProviderError",
  "InvalidClientTokenId",
  "UnrecognizedClientException",
  "SignatureDoesNotMatch",
  "IncompleteSignature",
  "MissingAuthenticationToken",
  "ExpiredToken",
]);
const ACCESS_DENIED_CODES = new Set(["AccessDenied", "AccessDeniedException", "InvalidSecurity", "KmsAccessDenied"]);
const NO_QUEUE_CODES = new Set(["QueueDoesNotExist", "NonExistentQueue"]);

/** What an SQS error means: wait it out and call again, or stop. */
export type SqsErrorKind = "transient" | "fatal";

/**
 * What an SQS error means, by class and code, never its message: transient for a network
 * fault, throttling, a server fault or 5xx, the in-flight limit, no answer by the deadline.
 */
export function classifySqsError(error: unknown): SqsErrorKind {
  if (error instanceof SqsDeadlineError) return "transient";
  // On any error that has it: a proxy's 502 page the SDK could not parse is no SQSServiceException.
  const status = (error as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode ?? 0;
  if (status === 429 || status >= 500) return "transient";
  if (error instanceof SQSServiceException) {
    // The modelled classes (`OverLimit`, `RequestThrottled`, …) and the plain exception the
    // SDK makes of a query-compatible answer alike: `sqsErrorCode` names both.
    const transient = error.$fault === "server" || error.$retryable !== undefined ||
      TRANSIENT_CODES.has(sqsErrorCode(error)!);
    return transient ? "transient" : "fatal";
  }
  // Node's own: refused, reset ("socket hang up"), unreachable, no name.
  return networkErrorCode(error) !== undefined ? "transient" : "fatal";
}

/** Whether an SQS error is worth waiting out (see `classifySqsError`). */
export function isTransientSqsError(error: unknown): boolean {
  return classifySqsError(error) === "transient";
}

/** An SQS error as one line with what to check. */
export function describeSqsError(error: unknown): string {
  const name = (error as Error | undefined)?.name ?? "";
  const code = sqsErrorCode(error) ?? name;
  const networkCode = networkErrorCode(error);
  if (NO_QUEUE_CODES.has(code)) return "queue does not exist (check the URL and region)";
  if (CREDENTIAL_CODES.has(code)) {
    return `AWS credentials rejected or missing (${name}): set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE`;
  }
  if (ACCESS_DENIED_CODES.has(code)) {
    return `access denied (${name}): the IAM identity needs sqs permissions on this queue`;
  }
  if (networkCode) {
    const endpoint = process.env.AWS_ENDPOINT_URL;
    return `endpoint unreachable (${networkCode}): is the SQS endpoint up? (AWS_ENDPOINT_URL=${
      endpoint ? redactUrl(endpoint) : "unset"
    })`;
  }
  return `${name || "error"}: ${firstLineScrubbed((error as Error | undefined)?.message ?? error)}`;
}

/** How many messages a queue holds, by state. */
export interface QueueDepth {
  visible: number;
  /** Received and not yet deleted or returned (in flight, in SQS's words "not visible"). */
  inFlight: number;
  delayed: number;
}

/** Read a queue's depth: the one reader the drain, the progress line, the bench and the tests share. */
export async function readQueueDepth(sqs: SQSClient, queueUrl: string, signal?: AbortSignal): Promise<QueueDepth> {
  const { Attributes = {} } = await boundedSqsCall(
    (options) =>
      sqs.send(
        new GetQueueAttributesCommand({
          QueueUrl: queueUrl,
          AttributeNames: [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
          ],
        }),
        options,
      ),
    SQS_CALL_DEADLINE_MS,
    signal,
  );
  return {
    visible: Number(Attributes.ApproximateNumberOfMessages ?? 0),
    inFlight: Number(Attributes.ApproximateNumberOfMessagesNotVisible ?? 0),
    delayed: Number(Attributes.ApproximateNumberOfMessagesDelayed ?? 0),
  };
}

/** Whether a queue is FIFO: only a FIFO queue's name ends in `.fifo`, and every one's does (SQS enforces both). */
export function isFifoQueue(queueUrl: string): boolean {
  try {
    return new URL(queueUrl).pathname.endsWith(".fifo");
  } catch {
    return false;
  }
}

/**
 * What it means when a queue and its DLQ are of different kinds, in one line; undefined
 * when they are of one kind. `check` counts it an error; the consumer warns and runs, since
 * the tool's own dead-letter sends still work (a FIFO DLQ gets each entry's group).
 */
export function queueKindMismatch(queueUrl: string, dlqUrl: string): string | undefined {
  const [queueFifo, dlqFifo] = [isFifoQueue(queueUrl), isFifoQueue(dlqUrl)];
  if (queueFifo === dlqFifo) return undefined;
  return queueFifo
    ? "the queue is FIFO and the DLQ standard: SQS's redrive policy cannot move a FIFO queue's messages there, and the DLQ keeps no order; give the queue a FIFO DLQ"
    : "the queue is standard and the DLQ FIFO: SQS's redrive policy cannot move a standard queue's messages there; give the queue a standard DLQ";
}
