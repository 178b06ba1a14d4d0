/**
 * What the consumer's parts share: the settings, the counters, the ledger, the two signals
 * of a stop, and how work is kept and failures stop everything.
 *
 * @module
 */
import type { Ledger } from "./ledger.ts";
import type { ConsumerSettings, ConsumerStats } from "./options.ts";

export interface ConsumerContext {
  readonly settings: ConsumerSettings;
  readonly stats: ConsumerStats;
  readonly ledger: Ledger;
  /** Aborted when a stop begins: ends the waits of receives, pauses and the drain watch. */
  readonly receiving: AbortSignal;
  /** Aborted when a stop's grace ends: abandons every call and wait still going. */
  readonly abandoning: AbortSignal;
  /** Whether a stop has begun. */
  stopping(): boolean;
  /** Keep a piece of work that a stop waits for; its failure stops the consumer. */
  track(work: Promise<void>): void;
}
