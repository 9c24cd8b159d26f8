/**
 * Runs tasks one at a time per key, in the order they were queued, and at most `limit` tasks at
 * once across keys. A task waiting for its key's predecessor does not hold a slot.
 */
export class KeyedQueue {
  readonly #tails = new Map<string, Promise<void>>()
  readonly #waiting: Array<() => void> = []
  #running = 0
  readonly #limit: number

  constructor(limit: number) {
    if (!(limit >= 1)) throw new TypeError(`concurrency must be >= 1, got ${limit}`)
    this.#limit = limit
  }

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(key)
    const start = (): Promise<T> =>
      this.#acquire().then(() => task().finally(() => this.#release()))
    const result = prev === undefined ? start() : prev.then(start)
    const tail = result.then(
      () => undefined,
      () => undefined,
    )
    this.#tails.set(key, tail)
    void tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key)
    })
    return result
  }

  /** Keys with queued or running work. */
  get size(): number {
    return this.#tails.size
  }

  #acquire(): Promise<void> {
    if (this.#running < this.#limit) {
      this.#running++
      return Promise.resolve()
    }
    return new Promise((resolve) => this.#waiting.push(resolve))
  }

  #release(): void {
    const next = this.#waiting.shift()
    if (next) next()
    else this.#running--
  }
}
