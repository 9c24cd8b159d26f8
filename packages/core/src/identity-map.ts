import { SubjectState } from './subject.js'
import type { SubjectHost } from './subject-host.js'

/**
 * The live subjects of a container, one state per name, bounded by clock eviction: idle clean
 * states beyond `maxSubjects` are dropped (their handles then forward to a fresh live state).
 */
export class IdentityMap {
  readonly #subjects = new Map<string, SubjectState>()
  readonly #max: number
  #sweepAt: number
  readonly #host: SubjectHost

  constructor(maxSubjects: number, host: SubjectHost) {
    this.#max = maxSubjects
    this.#sweepAt = maxSubjects
    this.#host = host
  }

  /** The live state of `name`, made (and the map swept, when over its bound) if there is none. */
  get(name: string): SubjectState {
    if (typeof name !== 'string' || name === '') {
      throw new TypeError(`a subject name must be a non-empty string, got ${JSON.stringify(name)}`)
    }
    let s = this.#subjects.get(name)
    if (s === undefined) {
      s = new SubjectState(name, this.#host)
      this.#subjects.set(name, s)
      if (this.#subjects.size > this.#sweepAt) this.#sweep(s)
    }
    return s
  }

  /** Live subjects (for tests and metrics). */
  get size(): number {
    return this.#subjects.size
  }

  names(): IterableIterator<string> {
    return this.#subjects.keys()
  }

  states(): IterableIterator<SubjectState> {
    return this.#subjects.values()
  }

  /**
   * Clock eviction: a recently used subject gets a second chance; dirty or busy ones stay, and so
   * does `keep`, the subject being handed out.
   */
  #sweep(keep: SubjectState): void {
    const target = Math.floor(this.#max * 0.9)
    // When nothing can go (all dirty or busy), sweep again only after 10 % more growth, so a
    // burst of pending writes does not make every get() call scan the whole map.
    this.#sweepAt = this.#max
    for (let pass = 0; pass < 2 && this.#subjects.size > target; pass++) {
      for (const [name, s] of this.#subjects) {
        if (this.#subjects.size <= target) break
        if (s.recentlyUsed) s.recentlyUsed = false
        else if (s.evictable && s !== keep) {
          s.evict()
          this.#subjects.delete(name)
        }
      }
    }
    if (this.#subjects.size > this.#max) {
      this.#sweepAt = Math.ceil(this.#subjects.size * 1.1)
    }
  }
}
