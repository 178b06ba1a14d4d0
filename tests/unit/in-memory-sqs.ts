/**
 * An SQS in memory, for the consumer's unit tests: queues keyed by URL, each message with
 * its visibility, receive count and current receipt, long polls that wait and can be
 * aborted, and the batch calls the consumer makes. It answers the commands the consumer
 * sends as SQS would, including what a stale receipt gets; `failNext` injects a fault.
 * Every call is logged, for tests that count them.
 */
import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  type Message,
  type MessageAttributeValue,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";

interface Stored {
  id: string;
  body: string;
  attributes: Record<string, MessageAttributeValue>;
  groupId?: string;
  visibleAt: number;
  receiveCount: number;
  receipt?: string;
  sequence: number;
}

export interface QueueView {
  /** Bodies still in the queue, in order. */
  bodies(): string[];
  /** Every message still in the queue. */
  messages(): ReadonlyArray<Readonly<Stored>>;
  /** Messages visible now. */
  visible(): number;
}

type Command =
  | ReceiveMessageCommand
  | DeleteMessageBatchCommand
  | ChangeMessageVisibilityBatchCommand
  | SendMessageBatchCommand
  | GetQueueAttributesCommand;

/** A call as the fake saw it: its command's name, and when. */
export interface Call {
  name: string;
  at: number;
  input: unknown;
}

const abortError = () => Object.assign(new Error("The operation was aborted"), { name: "AbortError" });

export class InMemorySqs {
  readonly calls: Call[] = [];
  /**
   * As real SQS: a long poll the client aborts lives on until its wait ends, and takes what
   * becomes visible meanwhile, for nobody (those messages stay invisible for a timeout).
   * Off, an abort ends the poll.
   */
  pollsOutliveAborts = false;
  private readonly queues = new Map<string, Stored[]>();
  private readonly waiters = new Set<() => void>();
  private readonly faults: Array<{ name: string; error: Error }> = [];
  private nextId = 0;

  /** Create a queue; a URL ending in `.fifo` is a FIFO queue. */
  createQueue(name: string): string {
    const url = `http://sqs.local/000000000000/${name}`;
    this.queues.set(url, []);
    return url;
  }

  /** The fake, typed as the client the consumer takes: it answers every command the consumer sends. */
  get client(): SQSClient {
    return this as unknown as SQSClient;
  }

  /** Put a message in a queue, as a producer would. */
  enqueue(queueUrl: string, body: string, options: { delaySeconds?: number; groupId?: string } = {}): void {
    this.queue(queueUrl).push({
      id: `m-${++this.nextId}`,
      body,
      attributes: {},
      groupId: options.groupId,
      visibleAt: Date.now() + (options.delaySeconds ?? 0) * 1000,
      receiveCount: 0,
      sequence: this.nextId,
    });
    this.wake();
  }

  /** The next call of this command (by its class name) throws `error` instead. */
  failNext(name: string, error: Error): void {
    this.faults.push({ name, error });
  }

  view(queueUrl: string): QueueView {
    const queue = () => this.queue(queueUrl);
    return {
      bodies: () => queue().map((m) => m.body),
      messages: () => queue(),
      visible: () => queue().filter((m) => m.visibleAt <= Date.now()).length,
    };
  }

  /** The SDK client's `send`, for the commands the consumer makes. */
  async send(command: Command, options: { abortSignal?: AbortSignal } = {}): Promise<unknown> {
    const name = command.constructor.name;
    this.calls.push({ name, at: Date.now(), input: command.input });
    const fault = this.faults.findIndex((f) => f.name === name);
    if (fault >= 0) throw this.faults.splice(fault, 1)[0]!.error;
    if (options.abortSignal?.aborted) throw abortError();
    if (command instanceof ReceiveMessageCommand) {
      if (!this.pollsOutliveAborts) return await this.receive(command, options.abortSignal);
      const poll = this.receive(command); // on, whatever the client does
      const aborted = new Promise<never>((_, reject) =>
        options.abortSignal?.addEventListener("abort", () => reject(abortError()), { once: true })
      );
      return await Promise.race([poll, aborted]);
    }
    if (command instanceof DeleteMessageBatchCommand) return this.deleteBatch(command);
    if (command instanceof ChangeMessageVisibilityBatchCommand) return this.changeVisibility(command);
    if (command instanceof SendMessageBatchCommand) return this.sendBatch(command);
    if (command instanceof GetQueueAttributesCommand) return this.attributes(command);
    throw new Error(`the in-memory SQS does not answer ${name}`);
  }

  private queue(url: string | undefined): Stored[] {
    const queue = this.queues.get(url ?? "");
    if (!queue) throw Object.assign(new Error("The specified queue does not exist."), { name: "QueueDoesNotExist" });
    return queue;
  }

  private wake(): void {
    for (const wake of this.waiters) wake();
    this.waiters.clear();
  }

  private async receive(command: ReceiveMessageCommand, signal?: AbortSignal): Promise<{ Messages?: Message[] }> {
    const { QueueUrl, MaxNumberOfMessages = 1, VisibilityTimeout = 30, WaitTimeSeconds = 0 } = command.input;
    const until = Date.now() + WaitTimeSeconds * 1000;
    for (;;) {
      const taken = this.take(
        this.queue(QueueUrl),
        MaxNumberOfMessages,
        VisibilityTimeout,
        QueueUrl!.endsWith(".fifo"),
      );
      if (taken.length > 0 || Date.now() >= until) return { Messages: taken.length > 0 ? taken : undefined };
      await this.nextChange(Math.min(until - Date.now(), 50), signal);
    }
  }

  /** What a receive takes: visible messages; on a FIFO queue, none of a group with one in flight. */
  private take(queue: Stored[], max: number, visibility: number, fifo: boolean): Message[] {
    const now = Date.now();
    const busyGroups = new Set(queue.filter((m) => m.visibleAt > now && m.receiveCount > 0).map((m) => m.groupId));
    const taken: Message[] = [];
    for (const m of queue) {
      if (taken.length >= max) break;
      if (m.visibleAt > now || (fifo && busyGroups.has(m.groupId))) continue;
      m.visibleAt = now + visibility * 1000;
      m.receiveCount++;
      m.receipt = `${m.id}#${m.receiveCount}`;
      taken.push({
        MessageId: m.id,
        ReceiptHandle: m.receipt,
        Body: m.body,
        MessageAttributes: Object.keys(m.attributes).length > 0 ? m.attributes : undefined,
        Attributes: {
          ApproximateReceiveCount: String(m.receiveCount),
          ...(m.groupId ? { MessageGroupId: m.groupId, SequenceNumber: String(m.sequence) } : {}),
        },
      });
    }
    return taken;
  }

  private nextChange(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", aborted);
        this.waiters.delete(done);
        resolve();
      };
      const aborted = () => {
        done();
        reject(abortError());
      };
      const timer = setTimeout(done, Math.max(1, ms));
      this.waiters.add(done);
      signal?.addEventListener("abort", aborted, { once: true });
    });
  }

  private byReceipt(url: string | undefined, receipt: string | undefined): Stored | undefined {
    return this.queue(url).find((m) => m.receipt === receipt);
  }

  private deleteBatch(command: DeleteMessageBatchCommand) {
    const { QueueUrl, Entries = [] } = command.input;
    const queue = this.queue(QueueUrl);
    const Successful: Array<{ Id: string }> = [];
    const Failed: Array<{ Id: string; Code: string; SenderFault: boolean }> = [];
    for (const entry of Entries) {
      const message = this.byReceipt(QueueUrl, entry.ReceiptHandle);
      if (message) queue.splice(queue.indexOf(message), 1);
      // SQS deletes by any receipt it handed out; a stale one fails only for a message received again.
      if (message || !this.isStale(entry.ReceiptHandle)) Successful.push({ Id: entry.Id! });
      else Failed.push({ Id: entry.Id!, Code: "ReceiptHandleIsInvalid", SenderFault: true });
    }
    this.wake();
    return { Successful, Failed };
  }

  private isStale(receipt: string | undefined): boolean {
    const [id] = (receipt ?? "").split("#");
    return [...this.queues.values()].some((queue) => queue.some((m) => m.id === id));
  }

  private changeVisibility(command: ChangeMessageVisibilityBatchCommand) {
    const { QueueUrl, Entries = [] } = command.input;
    const Successful: Array<{ Id: string }> = [];
    const Failed: Array<{ Id: string; Code: string; SenderFault: boolean }> = [];
    for (const entry of Entries) {
      const message = this.byReceipt(QueueUrl, entry.ReceiptHandle);
      if (!message || message.visibleAt <= Date.now()) {
        Failed.push({
          Id: entry.Id!,
          Code: message ? "MessageNotInflight" : "ReceiptHandleIsInvalid",
          SenderFault: true,
        });
        continue;
      }
      message.visibleAt = Date.now() + (entry.VisibilityTimeout ?? 0) * 1000;
      Successful.push({ Id: entry.Id! });
    }
    this.wake();
    return { Successful, Failed };
  }

  private sendBatch(command: SendMessageBatchCommand) {
    const { QueueUrl, Entries = [] } = command.input;
    const queue = this.queue(QueueUrl);
    for (const entry of Entries) {
      queue.push({
        id: `m-${++this.nextId}`,
        body: entry.MessageBody ?? "",
        attributes: entry.MessageAttributes ?? {},
        groupId: entry.MessageGroupId,
        visibleAt: Date.now() + (entry.DelaySeconds ?? 0) * 1000,
        receiveCount: 0,
        sequence: this.nextId,
      });
    }
    this.wake();
    return { Successful: Entries.map((e) => ({ Id: e.Id!, MessageId: `m-${this.nextId}` })), Failed: [] };
  }

  private attributes(command: GetQueueAttributesCommand) {
    const queue = this.queue(command.input.QueueUrl);
    const now = Date.now();
    const count = (test: (m: Stored) => boolean) => String(queue.filter(test).length);
    return {
      Attributes: {
        ApproximateNumberOfMessages: count((m) => m.visibleAt <= now),
        ApproximateNumberOfMessagesNotVisible: count((m) => m.visibleAt > now && m.receiveCount > 0),
        ApproximateNumberOfMessagesDelayed: count((m) => m.visibleAt > now && m.receiveCount === 0),
      },
    };
  }
}
