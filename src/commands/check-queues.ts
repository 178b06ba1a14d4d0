/**
 * `check`'s look at the queues: each reachable (GetQueueAttributes, the only call made:
 * nothing is received), and what their attributes mean for the tool: the visibility
 * timeout, SQS's own redrive policy and where it points, the DLQ's size limit, and whether
 * queue and DLQ are of one kind (FIFO or standard).
 *
 * @module
 */
import type { SQSClient } from "@aws-sdk/client-sqs";
import { ConfigError, redactUrl } from "../errors.ts";
import { inspectQueue, isFifoQueue, NO_REDRIVE_POLICY, type QueueInfo, queueKindMismatch } from "../sqs.ts";
import { errorFinding, type Finding } from "./check-report.ts";

/** Where the queues are: the source, and the DLQ if one is given. */
export interface QueueUrls {
  queueUrl: string;
  dlqUrl: string | undefined;
}

/** Reach each queue, and judge what it says. */
export async function checkQueues(sqs: SQSClient, urls: QueueUrls): Promise<Finding[]> {
  const [source, dlq] = await Promise.allSettled([
    inspectQueue(sqs, urls.queueUrl, "--queue-url"),
    urls.dlqUrl ? inspectQueue(sqs, urls.dlqUrl, "--dlq-url") : Promise.resolve(undefined),
  ]);
  // Both calls need the region: it is said once.
  const unreachable = [source, dlq].flatMap((o) => (o.status === "rejected" ? [o.reason as Error] : []))
    .filter((e, i, all) => all.findIndex((other) => other.message === e.message) === i)
    .map((e) => errorFinding(e.message, e instanceof ConfigError));
  const reached = source.status === "fulfilled"
    ? queueFindings(source.value, dlq.status === "fulfilled" ? dlq.value : undefined, urls)
    : [];
  return [...reached, ...unreachable];
}

/** What the attributes of reachable queues mean for the tool. */
export function queueFindings(source: QueueInfo, dlq: QueueInfo | undefined, urls: QueueUrls): Finding[] {
  const queue = `--queue-url ${redactUrl(urls.queueUrl)}`;
  const findings: Finding[] = [];
  const redrive = source.redrivePolicy;
  findings.push({
    level: "ok",
    text: `${queue}: reachable, VisibilityTimeout ${source.visibilityTimeoutSeconds} s, ${
      redrive ? `RedrivePolicy after ${redrive.maxReceiveCount} receives` : "no RedrivePolicy"
    }${isFifoQueue(urls.queueUrl) ? ", FIFO" : ""}`,
  });
  if (source.visibilityTimeoutSeconds === 0) {
    findings.push(errorFinding(
      `${queue}: VisibilityTimeout is 0, so a message received is at once visible to every other receive and no heartbeat can hold it: give the queue a VisibilityTimeout of 30 s or more`,
    ));
  }
  if (!redrive) findings.push({ level: "warning", text: `${queue}: ${NO_REDRIVE_POLICY}` });
  if (!dlq || !urls.dlqUrl) return findings;
  const dlqName = `--dlq-url ${redactUrl(urls.dlqUrl)}`;
  findings.push({ level: "ok", text: `${dlqName}: reachable` });
  const mismatch = queueKindMismatch(urls.queueUrl, urls.dlqUrl);
  if (mismatch) findings.push(errorFinding(`${dlqName}: ${mismatch}`));
  if (redrive && dlq.arn && redrive.deadLetterTargetArn !== dlq.arn) {
    findings.push({
      level: "warning",
      text:
        `${queue}: its RedrivePolicy moves messages to ${redrive.deadLetterTargetArn}, not to the DLQ of --dlq-url (${dlq.arn}): invalid messages would end up in two queues; point both at one DLQ`,
    });
  }
  if (dlq.maximumMessageSize < source.maximumMessageSize) {
    findings.push({
      level: "warning",
      text:
        `${dlqName}: its MaximumMessageSize (${dlq.maximumMessageSize} bytes) is below the queue's (${source.maximumMessageSize}): an invalid message too big for the DLQ is left in the queue for its RedrivePolicy; raise the DLQ's MaximumMessageSize to ${source.maximumMessageSize}`,
    });
  }
  return findings;
}
