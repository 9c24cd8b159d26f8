import { compileGlob } from './router.js'
import type { SubstateEvent } from './types.js'

/** Filters of {@link EventLog.recent}: a type glob, a subject glob, an origin id. */
export interface EventLogQuery {
  readonly type?: string
  readonly subject?: string
  readonly originId?: string
}

/** The last events a container dispatched, newest first, for debugging and admin UIs. */
export interface EventLog {
  /** Up to `n` of the most recent events matching `query`, newest first. */
  recent(n?: number, query?: EventLogQuery): SubstateEvent[]
  /** How many events the log keeps. */
  readonly capacity: number
}

/** A ring of the last `capacity` events; recording is one array store per event. */
export class EventRing implements EventLog {
  readonly capacity: number
  readonly #ring: (SubstateEvent | undefined)[]
  #next = 0

  constructor(capacity: number) {
    if (!(capacity >= 0)) throw new TypeError(`eventLog must be >= 0, got ${capacity}`)
    this.capacity = capacity
    this.#ring = new Array(capacity)
  }

  record(event: SubstateEvent): void {
    if (this.capacity === 0) return
    this.#ring[this.#next] = event
    this.#next = (this.#next + 1) % this.capacity
  }

  recent(n: number = this.capacity, query: EventLogQuery = {}): SubstateEvent[] {
    const type = query.type === undefined ? undefined : compileGlob(query.type)
    const subject = query.subject === undefined ? undefined : compileGlob(query.subject)
    const out: SubstateEvent[] = []
    for (let i = 1; i <= this.capacity && out.length < n; i++) {
      const e = this.#ring[(this.#next - i + this.capacity) % this.capacity]
      if (e === undefined) break
      if (type && !type(e.type)) continue
      if (subject && !subject(e.subject)) continue
      if (query.originId !== undefined && e.originId !== query.originId) continue
      out.push(e)
    }
    return out
  }
}
