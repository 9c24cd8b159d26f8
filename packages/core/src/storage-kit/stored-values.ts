/*
 * Turning stored JSON texts into a SubjectSnapshot: values another tool wrote (Python's spacing,
 * integers above 2^53, bare NaN) load without failing the whole subject, and their stored text is
 * kept (`raw`) so that a unit of work that read them can check them exactly.
 */
import { StorageError } from '../errors.js'
import type { JsonValue } from '../json.js'
import type { PropertyKind, SubjectSnapshot } from '../storage.js'

/** How stored texts are compared with what a unit of work sends as expected. */
export type TextComparison =
  /** Byte for byte (Redis): any text that `JSON.stringify(JSON.parse(text))` changes is raw. */
  | 'exact'
  /** As JSON values (PostgreSQL jsonb `=`): only a text whose numbers lose precision is raw. */
  | 'semantic'

type Entries = [string, JsonValue][]

/** Collects the stored fields of one subject into a snapshot. */
export class SnapshotBuilder {
  readonly #props: Entries = []
  readonly #ext: Entries = []
  #raw: { prop?: Record<string, string>; ext?: Record<string, string> } | undefined
  #invalid: { prop?: Record<string, string>; ext?: Record<string, string> } | undefined
  readonly #comparison: TextComparison

  constructor(comparison: TextComparison) {
    this.#comparison = comparison
  }

  /** Adds one stored field, as JSON text. */
  add(kind: PropertyKind, name: string, text: string): void {
    let value: JsonValue
    try {
      value = JSON.parse(text) as JsonValue
    } catch (e) {
      this.#note('invalid', kind, name, `not JSON: ${(e as Error).message}`)
      this.#note('raw', kind, name, text)
      return
    }
    if (!allFinite(value)) {
      this.#note('invalid', kind, name, 'holds a number outside the range of a double')
      this.#note('raw', kind, name, text)
      return
    }
    ;(kind === 'prop' ? this.#props : this.#ext).push([name, value])
    if (this.#comparison === 'exact' ? JSON.stringify(value) !== text : losesPrecision(text))
      this.#note('raw', kind, name, text)
  }

  #note(which: 'raw' | 'invalid', kind: PropertyKind, name: string, text: string): void {
    let target = which === 'raw' ? this.#raw : this.#invalid
    if (!target) {
      target = {}
      if (which === 'raw') this.#raw = target
      else this.#invalid = target
    }
    let map = target[kind]
    if (!map) {
      map = Object.create(null) as Record<string, string>
      target[kind] = map
    }
    // defineProperty: a property may be named `__proto__`.
    Object.defineProperty(map, name, { value: text, enumerable: true, writable: true })
  }

  /** The snapshot (`raw` and `invalid` only when there is something in them). */
  build(): SubjectSnapshot {
    // fromEntries, not assignment: a property may be named `__proto__`.
    const snapshot: {
      props: Record<string, JsonValue>
      ext: Record<string, JsonValue>
      raw?: SubjectSnapshot['raw']
      invalid?: SubjectSnapshot['invalid']
    } = { props: Object.fromEntries(this.#props), ext: Object.fromEntries(this.#ext) }
    if (this.#raw) snapshot.raw = plain(this.#raw)
    if (this.#invalid) snapshot.invalid = plain(this.#invalid)
    return snapshot
  }
}

const plain = (
  o: Record<string, Record<string, string> | undefined>,
): Record<string, Record<string, string>> => {
  const out: Record<string, Record<string, string>> = {}
  for (const [k, v] of Object.entries(o)) if (v) out[k] = Object.fromEntries(Object.entries(v))
  return out
}

/**
 * Splits the JSON text of an object into its members' key and value texts (top level only), so a
 * stored object read as a whole gives each property's own text. Assumes valid JSON.
 */
export function objectMembers(text: string): [string, string][] {
  const out: [string, string][] = []
  let i = text.indexOf('{') + 1
  const n = text.length
  const skipWs = (): void => {
    while (i < n && (text[i] === ' ' || text[i] === '\n' || text[i] === '\t' || text[i] === '\r'))
      i++
  }
  const skipString = (): void => {
    i++ // opening quote
    while (i < n && text[i] !== '"') i += text[i] === '\\' ? 2 : 1
    i++
  }
  for (;;) {
    skipWs()
    if (i >= n || text[i] === '}') return out
    const keyStart = i
    skipString()
    const key = JSON.parse(text.slice(keyStart, i)) as string
    skipWs()
    i++ // colon
    skipWs()
    const start = i
    let depth = 0
    while (i < n) {
      const c = text[i]!
      if (c === '"') {
        skipString()
        continue
      }
      if (c === '{' || c === '[') depth++
      else if (c === '}' || c === ']') {
        if (depth === 0) break
        depth--
      } else if (c === ',' && depth === 0) break
      i++
    }
    let end = i
    while (end > start && /\s/.test(text[end - 1]!)) end--
    out.push([key, text.slice(start, end)])
    if (text[i] === ',') i++
  }
}

/** Whether a JSON text holds a number that a double cannot hold exactly as written. */
export function losesPrecision(text: string): boolean {
  // Cheap pre-check: a double holds every number of 15 significant digits or fewer.
  if (!/\d{16,}|\d[eE][+-]?\d{3,}/.test(text)) return false
  for (const token of numbers(text)) {
    const n = Number(token)
    if (!Number.isFinite(n) || decimal(token) !== decimal(String(n))) return true
  }
  return false
}

/** The number tokens of a JSON text, outside strings. */
function* numbers(text: string): Generator<string> {
  const re = /"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g
  for (const m of text.matchAll(re)) if (m[0][0] !== '"') yield m[0]
}

/** A decimal number in a canonical form (sign, significant digits, exponent). */
function decimal(token: string): string {
  const m = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(token)
  if (!m) return token
  const [, sign, int, frac = '', exp = '0'] = m
  let digits = int! + frac
  let e = Number(exp) - frac.length
  const lead = digits.search(/[1-9]/)
  if (lead === -1) return '0'
  digits = digits.slice(lead)
  const trail = digits.length - digits.replace(/0+$/, '').length
  digits = digits.slice(0, digits.length - trail)
  e += trail
  return `${sign}${digits}e${e}`
}

/** An exponent of 3 digits or more: the only way JSON text can overflow a double. */
const HUGE = /\d[eE]\+?\d{3}/

/** Whether a JSON value holds only finite numbers. */
function allFinite(v: JsonValue): boolean {
  if (typeof v === 'number') return Number.isFinite(v)
  if (v === null || typeof v !== 'object') return true
  if (Array.isArray(v)) return v.every(allFinite)
  for (const k in v) if (!allFinite(v[k]!)) return false
  return true
}

/** Parses a stored JSON text; data that is not JSON (written by someone else) is a StorageError. */
export function parseRaw(
  raw: string | null,
  storage: string,
  subject: string,
  name: string,
): JsonValue | undefined {
  if (raw === null) return undefined
  let value: JsonValue
  try {
    value = JSON.parse(raw) as JsonValue
  } catch (cause) {
    throw new StorageError(storage, 'read', subject, `the stored value of ${name} is not JSON`, {
      cause,
    })
  }
  // A number outside the range of a double (1e400, written by another tool) parses as Infinity,
  // which no JSON value holds: an error, as when the whole subject is loaded.
  if (HUGE.test(raw) && !allFinite(value))
    throw new StorageError(
      storage,
      'read',
      subject,
      `the stored value of ${name} holds a number outside the range of a double`,
    )
  return value
}
