import type { Clock } from './clock.js'
import type { Logger } from './logger.js'
import type { ContainerMetrics, MetricsSnapshot } from './metrics.js'
import type { OutboxOptions } from './outbox.js'
import type { TargetFactories } from './routes.js'
import type { PayloadSchemas } from './schemas.js'
import type { StorageProvider } from './storage.js'
import type { TracerLike } from './telemetry.js'
import type { TimerOptions } from './timers.js'
import type { DeadLetterSink } from './types.js'

/** What `close()` reports. */
export interface CloseReport {
  /** Top-level events and units of work that were in flight when close began. */
  readonly drained: number
  /** Subjects whose pending writes were stored. */
  readonly stored: number
  /** True when in-flight work outlived `drainTimeout` (it was aborted through `ctx.signal`). */
  readonly timedOut: boolean
  /** What failed while closing (storing, flushing, hooks). */
  readonly errors: readonly unknown[]
  /**
   * Outbound messages still in the storage's outbox (not delivered yet): another process relaying
   * that storage, or this service after a restart, sends them.
   */
  readonly outbox: number
}

/** Options of {@link createContainer}. */
export interface ContainerOptions {
  /** Storage for subjects, or a function choosing one per subject name. @default in-memory */
  readonly storage?: StorageProvider
  /** CloudEvents `source` of the events this container emits. @default 'substate' */
  readonly source?: string
  /** Maximum cascade depth before `CascadeDepthError`. @default 64 */
  readonly maxDepth?: number
  /** `result`: `emit` resolves with failures listed; `throw`: it rejects with an `AggregateError`. @default 'result' */
  readonly errorMode?: 'result' | 'throw'
  /** Live subjects kept in the identity map; idle clean ones beyond this are evicted. @default 10_000 */
  readonly maxSubjects?: number
  /** Where events go when a handler's retries are exhausted. @default none */
  readonly deadLetter?: DeadLetterSink
  /**
   * Payload schemas by event type, of any Standard Schema library (zod, valibot, arktype):
   * `receive` validates the payload of those types first and rejects an invalid one with a
   * `ValidationError` naming the field (the HTTP receiver answers 400). Handlers get the schema's
   * output. Events emitted in the process are not validated (their payload is typed instead).
   * @default none
   */
  readonly schemas?: PayloadSchemas
  /** Units of work handled at once by `receive` (across subjects). @default 64 */
  readonly concurrency?: number
  /**
   * How long a unit of work is run again after conflicts (what it read changed before it
   * committed: another unit or process wrote it) before it fails, in ms. @default 10_000
   */
  readonly conflictTimeout?: number
  /** The outbox relay: how often it looks for undelivered messages, how long it holds one. */
  readonly outbox?: OutboxOptions
  /** How many handled `source`+`id` pairs `receive` remembers to drop duplicates. @default 10_000 */
  readonly dedupWindow?: number
  /** How many recent events `container.eventLog` keeps (0 turns it off). @default 100 */
  readonly eventLog?: number
  /**
   * Durable subject timers (`subject.schedule`): how often storage is polled for due timers and
   * how long a replica holds one it fires. Polling starts with the first `subject.schedule` of
   * this container, or with `container.start()` (call it where timers scheduled elsewhere, or
   * before a restart, must fire).
   */
  readonly timers?: TimerOptions
  /** Transports for `emit(..., { dispatchUrl })` and `emit(..., { topic })`. */
  readonly targets?: TargetFactories
  /**
   * A pino-style logger (`error`, `warn`, `info`, `debug`, each `(fields, message?)`): failures
   * (with event id, type, subject, origin id and the error), undelivered sends, units that gave up
   * after conflicts, an unreachable storage, the drain report of `close()`. @default the console
   * (errors and warnings; failures only when no `onError` hook is registered)
   */
  readonly logger?: Logger
  /**
   * OpenTelemetry tracing with this tracer (needs the optional peer `@opentelemetry/api`): spans
   * per unit of work, dispatch, handler, commit and send. @default none
   */
  readonly tracer?: TracerLike
  /** Trace with the global OpenTelemetry tracer provider (`@opentelemetry/api`). @default false */
  readonly tracing?: boolean
  /**
   * Where the container reads the time and sets its timers: schedules, durable timers, handler
   * retries and timeouts, batch waits, request timeouts, the outbox relay's polls, the `time` of
   * the events it makes. A test hands in `fakeClock()` from `@substate/core/testing` to drive them
   * without waiting. Not through it: `close()`'s `drainTimeout` and the backoff between re-runs of
   * a conflicting unit of work (both about work running for real), and metrics' durations.
   * @default the system clock
   */
  readonly clock?: Clock
}

/** `container.metrics`. */
export interface ContainerMetricsApi {
  /** Per-handler counters, latencies and duration histograms. */
  snapshot(): MetricsSnapshot
  /** Handlers plus the container's counters and histograms (and the outbox backlog). */
  collect(): Promise<ContainerMetrics>
  /** {@link collect} as Prometheus text: histograms in seconds, every family `substate_*`. */
  prometheus(): Promise<string>
}
