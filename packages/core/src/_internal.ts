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
