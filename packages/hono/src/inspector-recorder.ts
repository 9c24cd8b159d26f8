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
  durationMs: number | undefined
  readonly failures: RecordedFailure[]
}

/**
 * Records each dispatch of a container for the cascade view: a middleware (registered last, so the
 * innermost) times the dispatch of each event once and notes which event's dispatch it ran inside
 * (an AsyncLocalStorage frame, the same way core carries a cascade's scope), and an `onError` hook
 * attaches failures. Keeps the last `capacity` records (a ring); `close()` unregisters both.
 */
export class DispatchRecorder {
  readonly #ring: (DispatchRecord | undefined)[]
  readonly #byId = new Map<string, DispatchRecord>()
  readonly #frames = new AsyncLocalStorage<DispatchRecord>()
  readonly #unsubscribe: (() => void)[]
  #next = 0
  #seq = 0

  constructor(container: Container, capacity: number) {
    if (!(Number.isInteger(capacity) && capacity > 0))
      throw new TypeError(`cascade capacity must be a positive integer, got ${capacity}`)
    this.#ring = new Array(capacity)
    this.#unsubscribe = [
      container.middleware((ctx, next) => {
        const parent = this.#frames.getStore()
        const record = this.#record(
          ctx.event,
          parent !== undefined && parent.event.originId === ctx.originId
            ? parent.event.id
            : undefined,
        )
        const started = performance.now()
        return this.#frames.run(record, async () => {
          try {
            await next()
          } finally {
            record.durationMs = performance.now() - started
          }
        })
      }),
      container.onError((f) => this.#failure(f)),
    ]
  }

  #record(event: SubstateEvent, parentId: string | undefined): DispatchRecord {
    const record: DispatchRecord = {
      event,
      parentId,
      seq: this.#seq++,
      startedAt: Date.now(),
      durationMs: undefined,
      failures: [],
    }
    const evicted = this.#ring[this.#next]
    if (evicted !== undefined && this.#byId.get(evicted.event.id) === evicted)
      this.#byId.delete(evicted.event.id)
    this.#ring[this.#next] = record
    this.#next = (this.#next + 1) % this.#ring.length
    this.#byId.set(event.id, record)
    return record
  }

  #failure(f: HandlerFailure): void {
    // A failure of an event the middleware did not see (it ran before the inspector was created,
    // or fell out of the ring) still gets a record, without timing or parent.
    const record = this.#byId.get(f.event.id) ?? this.#record(f.event, undefined)
    const cause = (f.error as { cause?: unknown }).cause
    record.failures.push({
      handler: f.handler,
      error: describeError(cause instanceof Error ? cause : f.error),
      attempts: f.attempts,
      deadLettered: f.deadLettered,
    })
  }

  /** The records of one cascade, in start order. */
  cascade(originId: string): DispatchRecord[] {
    const out: DispatchRecord[] = []
    for (const r of this.#ring) if (r !== undefined && r.event.originId === originId) out.push(r)
    return out.sort((a, b) => a.seq - b.seq)
  }

  /** The most recent cascades (one entry per origin id), newest first. */
  origins(limit: number): CascadeSummary[] {
    const byOrigin = new Map<string, CascadeSummary & { first: number; last: number }>()
    for (const r of this.#ring) {
      if (r === undefined) continue
      let s = byOrigin.get(r.event.originId)
      if (s === undefined) {
        s = {
          originId: r.event.originId,
          type: r.event.type,
          subject: r.event.subject,
          startedAt: r.startedAt,
          events: 0,
          failures: 0,
          first: r.seq,
          last: r.seq,
        }
        byOrigin.set(r.event.originId, s)
      }
      s.events++
      s.failures += r.failures.length
      if (r.seq < s.first) {
        s.first = r.seq
        s.type = r.event.type
        s.subject = r.event.subject
        s.startedAt = r.startedAt
      }
      if (r.seq > s.last) s.last = r.seq
    }
    return [...byOrigin.values()]
      .sort((a, b) => b.last - a.last)
      .slice(0, limit)
      .map(({ first: _f, last: _l, ...s }) => s)
  }

  close(): void {
    for (const u of this.#unsubscribe) u()
  }
}

/** One cascade in the list of recent ones: its first event seen, how many events and failures. */
export interface CascadeSummary {
  readonly originId: string
  type: string
  subject: string
  startedAt: number
  events: number
  failures: number
}

export function describeError(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`
  return String(e)
}
