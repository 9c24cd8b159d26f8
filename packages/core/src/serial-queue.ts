/**
 * Runs async sections one after another, in the order they were queued (a subject's commits:
 * store, write-through, flush). When none is running, a section starts at once: no promise chain
 * to build, as this is on the path of every store and write-through.
 */
export class SerialQueue {
  /** Sections waiting for the one running; undefined while none runs. */
  #waiting: Array<() => void> | undefined
  readonly #onIdle: (() => void) | undefined

  /** `onIdle` is called each time the last queued section finished. */
  constructor(onIdle?: () => void) {
    this.#onIdle = onIdle
  }

  /** True while a section runs or waits. */
  get active(): boolean {
    return this.#waiting !== undefined
  }

  run<T>(fn: () => Promise<T>): Promise<T> {
    const start = (): Promise<T> => {
      let p: Promise<T>
      try {
        p = fn()
      } catch (e) {
        p = Promise.reject(e)
      }
      const next = (): void => this.#next()
      p.then(next, next)
      return p
    }
    if (this.#waiting === undefined) {
      this.#waiting = []
      return start()
    }
    return new Promise<T>((resolve, reject) => {
      this.#waiting!.push(() => start().then(resolve, reject))
    })
  }

  /** The running section finished: start the next one, or mark the queue idle. */
  #next(): void {
    const next = this.#waiting?.shift()
    if (next) next()
    else {
      this.#waiting = undefined
      this.#onIdle?.()
    }
  }
}
