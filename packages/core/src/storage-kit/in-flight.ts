/**
 * Counts an adapter's operations in flight so that `close()` can wait for them, without a promise
 * of its own per operation (commits are the hot path: see `CommitQueue.commit`'s `onSettled`).
 */
export class InFlight {
  #count = 0
  #idle: Array<() => void> = []

  /** One more operation; call {@link end} (once) when it settles. */
  start(): void {
    this.#count++
  }

  /** An operation settled. A bound function, to pass as a callback. */
  readonly end = (): void => {
    if (--this.#count > 0) return
    const idle = this.#idle
    this.#idle = []
    for (const resolve of idle) resolve()
  }

  /** Counts `work` until it settles; returns it. */
  track<T>(work: Promise<T>): Promise<T> {
    this.start()
    work.then(this.end, this.end)
    return work
  }

  /** Resolves once no operation is in flight. */
  idle(): Promise<void> {
    return this.#count === 0
      ? Promise.resolve()
      : new Promise((resolve) => this.#idle.push(resolve))
  }
}
