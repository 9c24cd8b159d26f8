/**
 * The time source of a container: `now()` and one-shot timers. Every time the engine waits for or
 * stamps goes through it (schedules, durable timers, handler retries and timeouts, batch waits,
 * request timeouts, the outbox relay's polls, event times), so a test can hand in a fake clock
 * (`fakeClock()` from `@substate/core/testing`) and drive all of them without waiting.
 */

/** A pending timer of a {@link Clock}: opaque, handed back to `clearTimeout`. */
export type ClockTimer = object

/**
 * Where a container reads the time and sets its timers (`createContainer({ clock })`). The
 * default is the system clock (`Date.now`, `setTimeout`); a fake one, from
 * `@substate/core/testing`, moves only when a test advances it.
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number
  /** Calls `callback` once, `ms` ms from now (at once for `ms <= 0`, on a later turn). */
  setTimeout(callback: () => void, ms: number): ClockTimer
  /** Cancels a timer of this clock (no effect when it already fired or is `undefined`). */
  clearTimeout(timer: ClockTimer | undefined): void
}

/**
 * The system clock: `Date.now()` and the global timers, looked up at each call (so a test that
 * fakes the globals, like `vi.useFakeTimers()`, fakes this clock too).
 */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (timer) => clearTimeout(timer as NodeJS.Timeout | undefined),
}

/** Resolves after `ms` on `clock`, or at once when `signal` aborts. */
export const sleep = (clock: Clock, ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve()
    const t = clock.setTimeout(done, ms)
    function done(): void {
      clock.clearTimeout(t)
      signal.removeEventListener('abort', done)
      resolve()
    }
    signal.addEventListener('abort', done, { once: true })
  })

/** Drops a timer's hold on the process (a Node timer's `unref`; nothing for other clocks). */
export const unref = (timer: ClockTimer): void => {
  ;(timer as { unref?: () => void }).unref?.()
}
