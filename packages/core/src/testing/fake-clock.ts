import type { Clock, ClockTimer } from '../clock.js'

/** Options of {@link fakeClock}. */
export interface FakeClockOptions {
  /** The time the clock starts at: ms since the epoch, or a `Date`. @default the real time now */
  readonly now?: number | Date
  /**
   * Event-loop turns given to the work a timer started before the clock moves on. One turn
   * settles every promise that waits only on other promises (all of the engine's and the
   * in-memory storage's work); raise it for code that hops through `setImmediate` or I/O.
   * @default 1
   */
  readonly settleTurns?: number
  /**
   * Timers one call may fire at a single instant of time before it gives up with an error: a
   * timer loop that never lets time move on.
   * @default 10_000
   */
  readonly loopLimit?: number
}

/**
 * A clock that moves only when told to: hand it to `createContainer({ clock })` (and to
 * `createMemoryStorage({ clock })` when you pass a storage) and schedules, durable timers, handler
 * retries and timeouts, batch waits, request timeouts and the outbox relay's polls wait for it,
 * not for real time. Moving it fires the timers that fall due, in time order (then in the order
 * they were set), each at its own time, and lets the work each one started settle before the next:
 * a test never waits, and every run fires the same timers in the same order.
 *
 * It does not patch `Date` or the global timers: code outside the container reads the real time.
 */
export interface FakeClock extends Clock {
  /** The fake time, in ms since the epoch. */
  now(): number
  setTimeout(callback: () => void, ms: number): ClockTimer
  clearTimeout(timer: ClockTimer | undefined): void
  /** Timers set and not fired or cleared yet. */
  readonly pending: number
  /** When the next timer is due, or `undefined` when none is set. */
  nextAt(): number | undefined
  /**
   * Moves time forward by `ms`, firing every timer due until then (those the fired ones set
   * too), each at its time, settling the work it started; resolves once time is `now() + ms` and
   * that work settled. Rejects with the first error a timer's callback threw.
   */
  advance(ms: number): Promise<void>
  /** {@link advance} to a point in time (not before `now()`). */
  advanceTo(time: number | Date): Promise<void>
  /** Moves to the next timer's time and fires every timer due then; resolves `false` when none is set. */
  next(): Promise<boolean>
  /** Settles pending work and fires the timers due now, without moving time. */
  flush(): Promise<void>
  /**
   * Skips time until `promise` settles: whenever the work in progress settled and `promise` is
   * still pending, it moves to the next timer and fires it (the way a time-skipping test server
   * does); resolves or rejects as `promise` does. Use it to await work that waits on the clock
   * (`await clock.runUntil(container.receive(event))` with a handler retrying with backoff). With
   * a storage on a server, time may be skipped while a reply is on its way: prefer `advance` there.
   * Gives up with an error after `limit` timers (the promise waits for something that never
   * comes, while recurring timers, like the pollers of timers and the outbox, go on).
   */
  runUntil<T>(promise: PromiseLike<T>, options?: { readonly limit?: number }): Promise<T>
}

interface Timer {
  readonly at: number
  readonly seq: number
  readonly callback: () => void
}

// Captured at load, so a test that also fakes the global timers still settles work for real.
const realSetImmediate = globalThis.setImmediate

/** One turn of the event loop: every promise chain that waits only on promises has settled. */
export const turn = (): Promise<void> => new Promise((resolve) => realSetImmediate(resolve))

const timeOf = (t: number | Date, what: string): number => {
  const ms = t instanceof Date ? t.getTime() : t
  if (typeof ms !== 'number' || !Number.isFinite(ms))
    throw new TypeError(`${what} must be a Date or ms since the epoch, got ${String(t)}`)
  return ms
}

/**
 * A fake {@link Clock} for tests; see {@link FakeClock}.
 *
 * @example
 * const clock = fakeClock({ now: new Date('2026-03-28T12:00:00Z') })
 * const container = createContainer({ clock })
 * container.schedule('report.daily', { cron: '0 6 * * *' })
 * await clock.advance(24 * 3600_000) // the report ran at 06:00, at once
 */
export function fakeClock({
  now: start = Date.now(),
  settleTurns = 1,
  loopLimit = 10_000,
}: FakeClockOptions = {}): FakeClock {
  if (!(Number.isInteger(settleTurns) && settleTurns >= 1))
    throw new TypeError(`fakeClock(): settleTurns must be an integer >= 1, got ${settleTurns}`)
  if (!(loopLimit >= 1))
    throw new TypeError(`fakeClock(): loopLimit must be >= 1, got ${loopLimit}`)
  let now = timeOf(start, 'fakeClock(): now')
  let seq = 0
  const timers = new Map<ClockTimer, Timer>()
  /** Called when a timer is set (`runUntil` waiting for one). */
  let onSet: (() => void) | undefined
  let moving = false

  const settle = async (): Promise<void> => {
    for (let i = 0; i < settleTurns; i++) await turn()
  }
  /** The timer to fire next among those due by `until`. */
  const due = (until: number): [ClockTimer, Timer] | undefined => {
    let first: [ClockTimer, Timer] | undefined
    for (const entry of timers) {
      const t = entry[1]
      if (t.at > until) continue
      if (
        first === undefined ||
        t.at < first[1].at ||
        (t.at === first[1].at && t.seq < first[1].seq)
      )
        first = entry
    }
    return first
  }
  /** Timers fired at the current instant (a loop that never lets time move is an error). */
  let atNow = 0
  const fire = ([handle, t]: [ClockTimer, Timer], errors: unknown[], what: string): void => {
    timers.delete(handle)
    if (t.at > now) {
      now = t.at
      atNow = 0
    }
    if (++atNow > loopLimit)
      throw new Error(
        `fakeClock(): ${what} fired ${loopLimit} timers at ${new Date(now).toISOString()} and they keep coming: a timer loop that never lets time move (loopLimit)`,
      )
    try {
      t.callback()
    } catch (e) {
      errors.push(e)
    }
  }
  /** Runs `body` as the one move in progress; rejects with the first error a callback threw. */
  const move = async (what: string, body: (errors: unknown[]) => Promise<void>): Promise<void> => {
    if (moving)
      throw new TypeError(
        `fakeClock(): ${what} while the clock is moving (await the other call first)`,
      )
    moving = true
    const errors: unknown[] = []
    try {
      await body(errors)
    } finally {
      moving = false
    }
    if (errors.length > 0) throw errors[0]
  }
  const to = (target: number, what: string): Promise<void> =>
    move(what, async (errors) => {
      for (;;) {
        await settle()
        const next = due(target)
        if (next !== undefined) fire(next, errors, what)
        else if (now < target) {
          now = target
          atNow = 0
        } else return
      }
    })

  return {
    now: () => now,
    setTimeout(callback, ms) {
      if (typeof callback !== 'function')
        throw new TypeError('fakeClock().setTimeout(): the callback must be a function')
      const handle = Object.freeze({})
      const delay = Number.isFinite(ms) && ms > 0 ? ms : 0
      timers.set(handle, { at: now + delay, seq: seq++, callback })
      onSet?.()
      return handle
    },
    clearTimeout(timer) {
      if (timer !== undefined) timers.delete(timer)
    },
    get pending() {
      return timers.size
    },
    nextAt() {
      return due(Number.POSITIVE_INFINITY)?.[1].at
    },
    advance(ms) {
      if (!(typeof ms === 'number' && ms >= 0 && Number.isFinite(ms)))
        return Promise.reject(
          new TypeError(`fakeClock().advance(): ms must be a number >= 0, got ${ms}`),
        )
      return to(now + ms, 'advance()')
    },
    advanceTo(time) {
      let target: number
      try {
        target = timeOf(time, 'fakeClock().advanceTo(): the time')
      } catch (e) {
        return Promise.reject(e)
      }
      if (target < now)
        return Promise.reject(
          new TypeError(
            `fakeClock().advanceTo(): ${new Date(target).toISOString()} is before the clock's time (${new Date(now).toISOString()}); a clock does not go back`,
          ),
        )
      return to(target, 'advanceTo()')
    },
    async next() {
      const at = due(Number.POSITIVE_INFINITY)?.[1].at
      if (at === undefined) return false
      await to(Math.max(at, now), 'next()')
      return true
    },
    flush() {
      return to(now, 'flush()')
    },
    async runUntil<T>(promise: PromiseLike<T>, { limit = 1_000_000 } = {}): Promise<T> {
      let settled = false
      const done = Promise.resolve(promise).then(
        () => {
          settled = true
        },
        () => {
          settled = true
        },
      )
      await move('runUntil()', async (errors) => {
        for (let fired = 0; ; ) {
          await settle()
          if (settled) return
          const next = due(Number.POSITIVE_INFINITY)
          if (next !== undefined) {
            if (++fired > limit)
              throw new Error(
                `fakeClock(): runUntil() fired ${limit} timers (up to ${new Date(now).toISOString()}) and the promise is still pending: it waits for something no timer brings`,
              )
            fire(next, errors, 'runUntil()')
            continue
          }
          // Nothing to skip to: the promise waits on something else (I/O); wait for it or a timer.
          await Promise.race([done, new Promise<void>((resolve) => (onSet = resolve))])
          onSet = undefined
        }
      })
      return promise
    },
  }
}
