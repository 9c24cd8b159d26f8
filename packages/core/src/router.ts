import micromatch from 'micromatch'

/** A compiled glob: `true` when the event type (or subject name) matches. */
export type GlobMatcher = (value: string) => boolean

/**
 * Compiles a micromatch glob once. `*` matches any run of characters except `/` (dots included,
 * so `device.*` matches `device.alert.critical`), `**` everything, plus `?`, `[abc]`, `[^abc]`,
 * `{a,b}` and a leading `!` for negation. Matching is case-sensitive.
 */
export function compileGlob(pattern: string): GlobMatcher {
  if (typeof pattern !== 'string' || pattern === '') {
    throw new TypeError(`a pattern must be a non-empty string, got ${JSON.stringify(pattern)}`)
  }
  // A pattern without glob syntax is an exact type: compare, do not regex.
  if (!/[*?[\]{}()!+@]/.test(pattern)) return (value) => value === pattern
  const problem = unbalanced(pattern)
  if (problem !== undefined)
    throw new TypeError(
      `invalid pattern ${JSON.stringify(pattern)}: ${problem} (escape a literal one with a backslash)`,
    )
  return micromatch.matcher(pattern, { dot: true })
}

const CLOSER: Record<string, string> = { '[': ']', '{': '}', '(': ')' }

/**
 * Why a glob's brackets, braces or parentheses do not pair up, or undefined when they do.
 * micromatch reads an unpaired one as a literal character, which hides a typo (`device.{a`
 * would match only the type `device.{a`); a literal one must be escaped.
 */
function unbalanced(pattern: string): string | undefined {
  const open: string[] = []
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!
    if (c === '\\') {
      i++ // an escaped character is literal
      continue
    }
    // Inside a character class, only its closing bracket is special (`[]` is never empty).
    if (open.at(-1) === '[') {
      if (
        c === ']' &&
        pattern[i - 1] !== '[' &&
        !(pattern[i - 1] === '^' && pattern[i - 2] === '[')
      )
        open.pop()
      continue
    }
    if (c === '[' || c === '{' || c === '(') open.push(c)
    else if (c === ']' || c === '}' || c === ')') {
      const top = open.pop()
      if (top === undefined) return `"${c}" closes nothing`
      if (CLOSER[top] !== c) return `"${top}" is closed by "${c}"`
    }
  }
  const top = open.pop()
  return top === undefined ? undefined : `"${top}" is never closed by "${CLOSER[top]}"`
}

/**
 * Routes event types to the entries registered for them, in registration order. Patterns are
 * compiled at registration; the entries matching a type are memoized on first sight, so routing
 * cost per event does not grow with the number of patterns. The memo is dropped on every
 * (un)registration and bounded to `maxTypes` distinct types.
 */
export class Router<T> {
  readonly #routes: Array<{ matchers: GlobMatcher[]; entry: T }> = []
  readonly #memo = new Map<string, readonly T[]>()
  readonly #maxTypes: number

  constructor(maxTypes = 10_000) {
    this.#maxTypes = maxTypes
  }

  /** Registers `entry` under `patterns`; returns a function removing it. */
  add(patterns: readonly string[], entry: T): () => void {
    const route = { matchers: patterns.map(compileGlob), entry }
    this.#routes.push(route)
    this.#memo.clear()
    return () => {
      const i = this.#routes.indexOf(route)
      if (i >= 0) {
        this.#routes.splice(i, 1)
        this.#memo.clear()
      }
    }
  }

  /** The entries whose patterns match `type`, in registration order. */
  match(type: string): readonly T[] {
    let hit = this.#memo.get(type)
    if (hit === undefined) {
      hit = this.#routes.filter((r) => r.matchers.some((m) => m(type))).map((r) => r.entry)
      if (this.#memo.size >= this.#maxTypes) this.#memo.clear()
      this.#memo.set(type, hit)
    }
    return hit
  }

  get size(): number {
    return this.#routes.length
  }
}
