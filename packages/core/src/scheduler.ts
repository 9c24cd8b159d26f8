import { unsubscribe } from './_internal.js'
import type { Clock, ClockTimer } from './clock.js'
import { nextTick, type ScheduleSpec } from './cron.js'
import { ShutdownError } from './errors.js'
import { ownEvent } from './events.js'
import type { Failures } from './failures.js'
import { copyJson } from './json.js'
import type { SubjectStorage } from './storage.js'
import type { EmitResult, Unsubscribe } from './types.js'

/** Options of `Container.schedule`. */
export interface ScheduleOptions {
  /**
   * Identifies the schedule in storage: containers sharing a storage and a schedule name share
   * its ticks (each tick is handled by one of them).
   * @default the event type
   */
  readonly name?: string
  /** Subject of the scheduled events. @default `schedule:<name>` */
  readonly subject?: string
}

/** What the scheduler needs of its container. */
export interface SchedulerHost {
  readonly state: { readonly closing: boolean }
  readonly failures: Failures
  /** When ticks are due, and the timers that wait for them. */
  readonly clock: Clock
  storageFor(subject: string): SubjectStorage
  /** Notes a subject the container writes itself (its storage is closed with the container). */
  ownSubject(name: string): void
  /** Handles a claimed tick as a unit of work (`container.receive`). */
  receive(event: {
    id: string
    source: string
    type: string
    subject: string
    payload: unknown
    time: number
  }): Promise<{ readonly status: string; readonly result?: EmitResult; readonly error?: Error }>
}

interface Tick {
  readonly type: string
  readonly subject: string
  readonly payload: unknown
  readonly name: string
}

/** The `source` of scheduled events (the same on every replica, so ticks dedupe across them). */
export const SCHEDULE_SOURCE = 'substate/schedule'
/** The longest delay a Node timer takes (2^31 - 1 ms, ~24.8 days). */
const MAX_TIMER = 2 ** 31 - 1
/** The id of a schedule's tick: the same on every replica. */
const tickId = (name: string, at: number): string => `${name}@${new Date(at).toISOString()}`

/**
 * Recurring events (`container.schedule`): each tick is claimed in storage by compare-and-set, so
 * replicas sharing a storage handle it once between them, and handled as a unit of work.
 */
export class Scheduler {
  readonly #host: SchedulerHost
  /** Stops each running schedule (on close). */
  readonly #running = new Set<() => void>()

  constructor(host: SchedulerHost) {
    this.#host = host
  }

  /** Stops every schedule. */
  stopAll(): void {
    for (const stop of [...this.#running]) stop()
  }

  schedule(
    type: string,
    when: ScheduleSpec,
    payload?: unknown,
    options?: { readonly name?: string; readonly subject?: string },
  ): Unsubscribe {
    if (typeof type !== 'string' || type === '')
      throw new TypeError(
        `schedule(): the event type must be a non-empty string, got ${JSON.stringify(type)}`,
      )
    if (this.#host.state.closing) throw new ShutdownError()
    const next = nextTick(when)
    const clock = this.#host.clock
    next(clock.now()) // a cron expression that never matches throws here, not later
    const name = options?.name ?? type
    const subject = options?.subject ?? `schedule:${name}`
    const data = payload === undefined ? undefined : copyJson(payload, `the payload of ${type}`)
    const claim = `substate:schedule:${name}`
    let timer: ClockTimer | undefined
    let stopped = false
    const stop = (): void => {
      stopped = true
      clock.clearTimeout(timer)
      this.#running.delete(stop)
    }
    const wait = (at: number): void => {
      if (stopped) return
      // Node caps a timer at ~24.8 days (longer delays fire at once): wait in steps, and never
      // fire a tick before its time.
      const left = at - clock.now()
      if (left > 0) {
        timer = clock.setTimeout(() => wait(at), Math.min(left, MAX_TIMER))
        return
      }
      arm(at) // the next tick does not wait for this one's handlers
      void this.#tick(claim, at, { type, subject, payload: data, name })
    }
    const arm = (after: number): void => {
      if (stopped) return
      let at: number
      try {
        at = next(after)
      } catch (e) {
        // A cron expression that stops matching (a 29 February beyond the search window).
        this.#host.failures.report(
          `schedule:${name}`,
          ownEvent(tickId(name, after), SCHEDULE_SOURCE, type, subject, after, data),
          e,
        )
        return
      }
      wait(at)
    }
    arm(clock.now())
    this.#running.add(stop)
    return unsubscribe(stop)
  }

  /** Claims a tick in storage (one replica wins it) and handles it as a unit of work. */
  async #tick(claim: string, at: number, tick: Tick): Promise<void> {
    const host = this.#host
    const event = ownEvent(
      tickId(tick.name, at),
      SCHEDULE_SOURCE,
      tick.type,
      tick.subject,
      at,
      tick.payload,
    )
    let won: boolean
    try {
      const storage = host.storageFor(claim)
      const { changes } = await storage.commit(claim, [
        {
          op: 'update',
          kind: 'prop',
          name: 'tick',
          // The latest tick claimed: a replica that finds this one (or a later one) there lost.
          update: (last) => (typeof last === 'number' && last >= at ? last : at),
        },
      ])
      won = changes[0]?.newValue === at && changes[0]?.oldValue !== at
    } catch (e) {
      // Storage failed: this replica skips the tick (another may have claimed it). Reported,
      // unless the container is closing (its storage may be closed under the claim).
      if (!host.state.closing) host.failures.report(`schedule:${tick.name}`, event, e)
      return
    }
    if (!won || host.state.closing) return
    host.ownSubject(claim)
    const result = await host
      .receive({
        id: event.id,
        source: SCHEDULE_SOURCE,
        type: tick.type,
        subject: tick.subject,
        payload: tick.payload,
        time: at,
      })
      .catch(() => undefined) // closing meanwhile
    if (!host.state.closing) host.failures.reportUnstored(`schedule:${tick.name}`, event, result)
  }
}
