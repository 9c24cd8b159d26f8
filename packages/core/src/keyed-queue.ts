/**
 * Runs tasks one at a time per key, in the order they were queued, and at most `limit` tasks at
 * once across keys. A task waiting for its key's predecessor does not hold a slot; once the
 * predecessor settled, it waits for a slot behind the tasks already waiting for one.
 *
 * Built from callbacks, not promise chains: every unit of work goes through it, and each promise
 * costs (AsyncLocalStorage hooks included). A task started at once costs one promise besides its
 * own.
 */
export class KeyedQueue {
  /** Per key with a task running or waiting for a slot: the tasks queued behind it, in order. */
  readonly #behind = new Map<string, Array<() => void>>()
  /** Tasks waiting for a slot (each the first of its key), in order. */
  readonly #waiting: Array<() => void> = []
  #running = 0
  readonly #limit: number

  constructor(limit: number) {
    if (!(limit >= 1)) throw new TypeError(`concurrency must be >= 1, got ${limit}`)
    this.#limit = limit
  }

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const behind = this.#behind.get(key)
    if (behind === undefined && this.#running < this.#limit) {
      this.#behind.set(key, [])
      this.#running++
      return this.#start(key, task)
    }
    return new Promise<T>((resolve, reject) => {
      const start = (): void => void this.#start(key, task).then(resolve, reject)
      if (behind !== undefined) behind.push(start)
      else {
        this.#behind.set(key, [])
        this.#waiting.push(start)
      }
    })
  }

  /** Keys with queued or running work. */
  get size(): number {
    return this.#behind.size
  }

  /** Runs `task` in a slot already taken; frees it once the task settled. */
  #start<T>(key: string, task: () => Promise<T>): Promise<T> {
    let work: Promise<T>
    try {
      work = task()
    } catch (e) {
      work = Promise.reject(e)
    }
    const settled = (): void => this.#settled(key)
    work.then(settled, settled)
    return work
  }

  #settled(key: string): void {
    const behind = this.#behind.get(key)!
    const next = behind.shift()
    if (next === undefined) this.#behind.delete(key)
    else this.#waiting.push(next)
    // The slot goes to the first task waiting for one, if any.
    const first = this.#waiting.shift()
    if (first !== undefined) first()
    else this.#running--
  }
}
