import { AsyncLocalStorage } from 'node:async_hooks'
import type { Container, HandlerFailure, SubstateEvent } from '@substate/core'

/** One failure of a handler (or filter, middleware, route) on one event, as the inspector shows it. */
export interface RecordedFailure {
  readonly handler: string
  readonly error: string
  readonly attempts: number
  readonly deadLettered: boolean
}

/** What the inspector recorded about one dispatched event. */
export interface DispatchRecord {
  readonly event: SubstateEvent
  /** The event whose handler emitted this one (same origin id), when it was seen. */
  readonly parentId: string | undefined
  /** Order of the starts, across all events the recorder saw. */
  readonly seq: number
  /** Milliseconds since the epoch when its dispatch began. */
  readonly startedAt: number
  /** Duration of the whole dispatch (handlers and the cascade they caused), ms; unset while running. */
  readonly durationMs: number | undefined
  readonly failures: readonly RecordedFailure[]
}

/** One cascade in the list of recent ones: its first event seen, how many events and failures. */
export interface CascadeSummary {
  readonly originId: string
  readonly type: string
  readonly subject: string
  readonly startedAt: number
  readonly events: number
  readonly failures: number
}

const NONE: readonly RecordedFailure[] = []

/**
 * Records each dispatch of a container for the cascade view: a middleware (registered last, so the
 * innermost) times the dispatch of each event once and notes which event's dispatch it ran inside
 * (an AsyncLocalStorage frame holding the parent's sequence number, the way core carries a
 * cascade's scope), and an `onError` hook attaches failures. Keeps the last `capacity` dispatches
 * in a ring of parallel arrays: no object is allocated and kept per event, which would make every
 * record survive into the old generation and the garbage collector pay for it.
 */
export class DispatchRecorder {
  readonly #capacity: number
  readonly #events: (SubstateEvent | undefined)[]
  readonly #parents: (string | undefined)[]
  readonly #seqs: Float64Array
  readonly #starts: Float64Array
  /** Duration in ms, or -1 while the dispatch runs. */
  readonly #durations: Float64Array
  /** Failures by sequence number; entries leave with their slot. */
  readonly #failures = new Map<number, RecordedFailure[]>()
  readonly #frames = new AsyncLocalStorage<number>()
  readonly #unsubscribe: (() => void)[]
  #seq = 0

  constructor(container: Container, capacity: number) {
    if (!(Number.isInteger(capacity) && capacity > 0))
      throw new TypeError(`cascade capacity must be a positive integer, got ${capacity}`)
    this.#capacity = capacity
    this.#events = new Array(capacity).fill(undefined)
    this.#parents = new Array(capacity).fill(undefined)
    this.#seqs = new Float64Array(capacity).fill(-1)
    this.#starts = new Float64Array(capacity)
    this.#durations = new Float64Array(capacity)
    this.#unsubscribe = [
      container.middleware((ctx, next) => {
        const started = performance.now()
        const seq = this.#record(ctx.event, this.#frames.getStore(), started)
        const slot = seq % capacity
        const done = (): void => {
          if (this.#seqs[slot] === seq) this.#durations[slot] = performance.now() - started
        }
        // No async wrapper: one promise less per event on the hot path.
        return this.#frames.run(seq, next).then(done, (e: unknown) => {
          done()
          throw e
        })
      }),
      container.onError((f) => this.#failure(f)),
    ]
  }

  /** Stores an event in the next slot; returns its sequence number. */
  #record(event: SubstateEvent, parentSeq: number | undefined, at: number): number {
    const seq = this.#seq++
    const slot = seq % this.#capacity
    const evicted = this.#seqs[slot]!
    if (evicted >= 0 && this.#failures.size > 0) this.#failures.delete(evicted)
    let parent: string | undefined
    if (parentSeq !== undefined) {
      const p = parentSeq % this.#capacity
      const pe = this.#events[p]
      // The parent is still in the ring and of the same cascade (a detached emit starts its own).
      if (this.#seqs[p] === parentSeq && pe !== undefined && pe.originId === event.originId)
        parent = pe.id
    }
    this.#events[slot] = event
    this.#parents[slot] = parent
    this.#seqs[slot] = seq
    this.#starts[slot] = performance.timeOrigin + at
    this.#durations[slot] = -1
    return seq
  }

  #failure(f: HandlerFailure): void {
    // A failure of an event the middleware did not see (it ran before the inspector was created,
    // or fell out of the ring) still gets a record, without timing or parent.
    const seq = this.#find(f.event) ?? this.#record(f.event, undefined, performance.now())
    const cause = (f.error as { cause?: unknown }).cause
    const failure: RecordedFailure = {
      handler: f.handler,
      error: describeError(cause instanceof Error ? cause : f.error),
      attempts: f.attempts,
      deadLettered: f.deadLettered,
    }
    const list = this.#failures.get(seq)
    if (list === undefined) this.#failures.set(seq, [failure])
    else list.push(failure)
  }

  /** The latest sequence number of `event`: failures are rare, so a scan beats an index per event. */
  #find(event: SubstateEvent): number | undefined {
    for (let seq = this.#seq - 1; seq >= 0 && seq >= this.#seq - this.#capacity; seq--) {
      const e = this.#events[seq % this.#capacity]
      if (e !== undefined && e.id === event.id && e.source === event.source) return seq
    }
    return undefined
  }

  #read(seq: number): DispatchRecord {
    const slot = seq % this.#capacity
    const duration = this.#durations[slot]!
    return {
      event: this.#events[slot]!,
      parentId: this.#parents[slot],
      seq,
      startedAt: this.#starts[slot]!,
      durationMs: duration < 0 ? undefined : duration,
      failures: this.#failures.get(seq) ?? NONE,
    }
  }

  /** The records of one cascade, in start order. */
  cascade(originId: string): DispatchRecord[] {
    const out: DispatchRecord[] = []
    for (let seq = Math.max(0, this.#seq - this.#capacity); seq < this.#seq; seq++) {
      if (this.#events[seq % this.#capacity]?.originId === originId) out.push(this.#read(seq))
    }
    return out
  }

  /** The most recent cascades (one entry per origin id), newest first. */
  origins(limit: number): CascadeSummary[] {
    const byOrigin = new Map<string, { first: number; events: number; failures: number }>()
    // Newest first, so the map's insertion order is the order of the answer.
    for (let seq = this.#seq - 1; seq >= 0 && seq >= this.#seq - this.#capacity; seq--) {
      const e = this.#events[seq % this.#capacity]!
      let s = byOrigin.get(e.originId)
      if (s === undefined) {
        s = { first: seq, events: 0, failures: 0 }
        byOrigin.set(e.originId, s)
      }
      s.first = seq
      s.events++
      s.failures += this.#failures.get(seq)?.length ?? 0
    }
    const out: CascadeSummary[] = []
    for (const [originId, s] of byOrigin) {
      if (out.length === limit) break
      const first = this.#read(s.first)
      out.push({
        originId,
        type: first.event.type,
        subject: first.event.subject,
        startedAt: first.startedAt,
        events: s.events,
        failures: s.failures,
      })
    }
    return out
  }

  close(): void {
    for (const u of this.#unsubscribe) u()
  }
}

export function describeError(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`
  return String(e)
}
