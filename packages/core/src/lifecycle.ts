import { unsubscribe } from './_internal.js'
import type { WorkTracker } from './dispatcher.js'
import { ShutdownError } from './errors.js'
import type { Unsubscribe } from './types.js'

type Hook = () => Promise<void> | void

/**
 * A container's life: start and close hooks, the closing flag, the count of in-flight top-level
 * work (events and units of work) with a wait for it to reach zero, and the abort signal handlers
 * see when the container gives up on that work.
 */
export class Lifecycle implements WorkTracker {
  readonly #startHooks = new Set<Hook>()
  readonly #closeHooks = new Set<Hook>()
  readonly #abort = new AbortController()
  #inflight = 0
  #idle: (() => void) | undefined
  #closing = false
  #started: Promise<void> | undefined

  get signal(): AbortSignal {
    return this.#abort.signal
  }

  /** True once `close()` began. */
  get closing(): boolean {
    return this.#closing
  }

  /** Top-level work in flight. */
  get inflight(): number {
    return this.#inflight
  }

  enter(): void {
    this.#inflight++
  }

  leave(): void {
    if (--this.#inflight === 0) this.#idle?.()
  }

  onStart(hook: Hook): Unsubscribe {
    this.#startHooks.add(hook)
    return unsubscribe(() => this.#startHooks.delete(hook))
  }

  onClose(hook: Hook): Unsubscribe {
    this.#closeHooks.add(hook)
    return unsubscribe(() => this.#closeHooks.delete(hook))
  }

  /** Runs the start hooks, once. */
  start(): Promise<void> {
    this.#started ??= (async () => {
      for (const hook of this.#startHooks) await hook()
    })()
    return this.#started
  }

  /** Marks the container closing (no more intake). */
  beginClose(): void {
    this.#closing = true
  }

  /** Runs the close hooks in order; what they throw goes to `errors`. */
  async runCloseHooks(errors: unknown[]): Promise<void> {
    for (const hook of this.#closeHooks) {
      try {
        await hook()
      } catch (e) {
        errors.push(e)
      }
    }
  }

  /**
   * Waits until nothing is in flight, at most `timeout` ms; past it, aborts the signal (handlers
   * see it) and resolves true.
   */
  async drain(timeout: number): Promise<boolean> {
    if (this.#inflight === 0) return false
    const idle = new Promise<void>((resolve) => {
      this.#idle = resolve
    })
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), timeout)
    })
    const timedOut = await Promise.race([idle.then(() => false), late])
    clearTimeout(timer)
    if (timedOut) this.#abort.abort(new ShutdownError('drain timeout: in-flight work was aborted'))
    return timedOut
  }

  /** The end of close: whatever still runs sees the signal aborted. */
  abort(): void {
    this.#abort.abort(new ShutdownError())
  }
}
