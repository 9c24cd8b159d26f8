import type { Observable } from 'rxjs'
import { compileGlob } from '../router.js'
import type { SubstateEvent } from '../types.js'

/** What {@link recordEvents} needs of a container. */
export interface EventSource {
  readonly events$: Observable<SubstateEvent>
}

/** Options of {@link EventRecorder.waitFor}. */
export interface WaitForOptions {
  /** Only events for which this returns true. */
  readonly where?: (event: SubstateEvent) => boolean
  /** Resolve with the `count`-th matching event. @default 1 */
  readonly count?: number
}

/**
 * The events a container published (`events$`: committed ones only, so a unit of work's appear
 * once it is stored), in order. `Disposable`: `using recorder = recordEvents(container)`.
 */
export interface EventRecorder extends Disposable {
  /** The events recorded since the last `clear()`, oldest first. */
  readonly events: readonly SubstateEvent[]
  /** Their types, in order. */
  types(): string[]
  /** The recorded events whose type matches a glob (`'order.*'`). */
  of(pattern: string): SubstateEvent[]
  /**
   * The first recorded event matching a glob (and `where`), or the next one to come: resolves
   * at once when it is already recorded (since the last `clear()`). Rejects when the container
   * closes first, or when the recorder stops.
   */
  waitFor(pattern: string, options?: WaitForOptions): Promise<SubstateEvent>
  /** Forgets the events recorded so far. */
  clear(): void
  /** Stops recording (what was recorded stays). */
  stop(): void
}

interface Waiter {
  readonly match: (e: SubstateEvent) => boolean
  left: number
  resolve(e: SubstateEvent): void
  reject(e: Error): void
}

/**
 * Records the events a container publishes on `events$`, all or those whose type matches
 * `pattern` (a glob or several).
 *
 * @example
 * const recorder = recordEvents(container, 'order.*')
 * await container.receive(event)
 * expect(recorder.types()).toEqual(['order.paid', 'order.shipped'])
 */
export function recordEvents(
  container: EventSource,
  pattern?: string | readonly string[],
): EventRecorder {
  if (typeof container?.events$?.subscribe !== 'function')
    throw new TypeError('recordEvents(): the first argument must be a container (with events$)')
  const filters = (
    pattern === undefined ? [] : typeof pattern === 'string' ? [pattern] : pattern
  ).map((p) => compileGlob(p))
  const wanted = (type: string) => filters.length === 0 || filters.some((m) => m(type))
  const events: SubstateEvent[] = []
  const waiters = new Set<Waiter>()
  let ended: string | undefined
  const end = (why: string): void => {
    ended = why
    for (const w of waiters) w.reject(new Error(`recordEvents(): ${why} before the event came`))
    waiters.clear()
  }
  const offer = (e: SubstateEvent, w: Waiter): boolean => {
    if (!w.match(e) || --w.left > 0) return false
    w.resolve(e)
    return true
  }
  const subscription = container.events$.subscribe({
    next: (e) => {
      if (!wanted(e.type)) return
      events.push(e)
      for (const w of waiters) if (offer(e, w)) waiters.delete(w)
    },
    complete: () => end('the container closed'),
  })
  const stop = (): void => {
    subscription.unsubscribe()
    if (ended === undefined) end('the recorder stopped')
  }
  return {
    events,
    types: () => events.map((e) => e.type),
    of: (p) => {
      const match = compileGlob(p)
      return events.filter((e) => match(e.type))
    },
    waitFor(p, { where, count = 1 } = {}) {
      const type = compileGlob(p)
      if (!(Number.isInteger(count) && count >= 1))
        throw new TypeError(`waitFor(): count must be an integer >= 1, got ${count}`)
      return new Promise<SubstateEvent>((resolve, reject) => {
        const waiter: Waiter = {
          match: (e) => type(e.type) && (where === undefined || where(e)),
          left: count,
          resolve,
          reject,
        }
        for (const e of events) if (offer(e, waiter)) return
        if (ended !== undefined) reject(new Error(`recordEvents(): ${ended} before the event came`))
        else waiters.add(waiter)
      })
    },
    clear: () => {
      events.length = 0
    },
    stop,
    [Symbol.dispose]: stop,
  }
}
