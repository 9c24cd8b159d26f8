import { randomUUID } from 'node:crypto'
import type { RetryPolicy, Unsubscribe } from './types.js'

/**
 * A set that remembers the last `capacity` keys added (oldest forgotten first), for duplicate
 * windows. A ring buffer, not `set.delete(set.values().next().value)`: V8 leaves deleted entries
 * at the front of a Set's table and that iterator walks them on every call.
 */
export class RecentKeys {
  readonly #keys = new Set<string>()
  readonly #ring: (string | undefined)[]
  #head = 0

  constructor(capacity: number) {
    if (!(capacity >= 1))
      throw new TypeError(`a duplicate window must hold >= 1 key, got ${capacity}`)
    this.#ring = new Array(capacity)
  }

  has(key: string): boolean {
    return this.#keys.has(key)
  }

  /** Adds `key`; returns false when it was already there. */
  add(key: string): boolean {
    if (this.#keys.has(key)) return false
    const old = this.#ring[this.#head]
    if (old !== undefined) this.#keys.delete(old)
    this.#ring[this.#head] = key
    this.#head = (this.#head + 1) % this.#ring.length
    this.#keys.add(key)
    return true
  }

  clear(): void {
    this.#keys.clear()
    this.#ring.fill(undefined)
  }
}

const dispose: typeof Symbol.dispose = Symbol.dispose ?? (Symbol.for('Symbol.dispose') as never)

/** `fn` as an {@link Unsubscribe}: callable, and `Disposable` (`using off = on(...)`). */
export const unsubscribe = (fn: () => void): Unsubscribe => Object.assign(fn, { [dispose]: fn })

/** Milliseconds of backoff before retry `n` (1-based), with ±20 % jitter. */
export function backoff(policy: RetryPolicy | undefined, n: number): number {
  const { initial = 50, factor = 2, max = 5000 } = policy?.backoff ?? {}
  const base = Math.min(max, initial * factor ** (n - 1))
  return base * (0.8 + Math.random() * 0.4)
}

/** Event ids of one container: a random prefix and a counter (unique, cheap, ordered). */
export class IdGenerator {
  readonly #prefix = randomUUID().slice(0, 18)
  #seq = 0

  next(): string {
    return `${this.#prefix}-${(this.#seq++).toString(36)}`
  }
}
