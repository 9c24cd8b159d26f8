/** A JSON value: what a subject property can hold. */
export type JsonValue =
  | null
  | boolean
  | number
  | string
  | JsonValue[]
  | { [key: string]: JsonValue }

/** How deep a JSON value may nest (objects and arrays within each other), at most. */
export const MAX_JSON_DEPTH = 256

/**
 * What `copyJson` names in its errors: a fixed description (a nested value's path is prefixed
 * to it: `field "items[2].x" of the payload of order.created`), or a function of that path
 * (`''` for the value itself) returning the whole description.
 */
export type JsonWhat = string | ((path: string) => string)

/**
 * Validates `value` as JSON and returns a deep copy of it, so that later mutation by the caller
 * changes nothing held by Substate. Throws a `TypeError` naming `what` (and the path inside the
 * value) for anything that JSON cannot carry faithfully: `undefined`, functions, symbols, BigInt,
 * non-finite numbers, class instances (Map, Set, Date...), cycles, and values nested deeper than
 * {@link MAX_JSON_DEPTH} levels (every reader of the value would need that much stack).
 */
export function copyJson(value: unknown, what: JsonWhat): JsonValue {
  // Fast path: primitives need neither copy nor walk.
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value
    case 'object':
      if (value === null) return null
      return copyObject(value, what, '', [])
    default:
      return copyPrimitive(value, what, '')
  }
}

/** `what` with the path of a nested value in it. */
function describe(what: JsonWhat, path: string): string {
  if (typeof what === 'function') return what(path)
  return path === '' ? what : `field "${path}" of ${what}`
}

/** "a" or "an", by the sound of the first letter (good enough for type names). */
const article = (word: string): string => (/^[aeiou]/i.test(word) ? `an ${word}` : `a ${word}`)

function copyPrimitive(value: unknown, what: JsonWhat, path: string): JsonValue {
  if (value === null) return null
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value
    case 'number':
      if (Number.isFinite(value)) return value
      throw new TypeError(
        `${describe(what, path)} is ${value}, which is not a JSON value (use null or a string)`,
      )
    case 'undefined':
      throw new TypeError(
        `${describe(what, path)} is undefined, which is not a JSON value (leave it out, or use null)`,
      )
    default:
      throw new TypeError(
        `${describe(what, path)} is ${article(typeof value)}, which is not a JSON value`,
      )
  }
}

function copyObject(value: object, what: JsonWhat, path: string, stack: object[]): JsonValue {
  if (stack.includes(value))
    throw new TypeError(`${describe(what, path)} contains a cycle, which JSON cannot hold`)
  if (stack.length >= MAX_JSON_DEPTH)
    throw new TypeError(
      `${describe(what, path)} is nested more than ${MAX_JSON_DEPTH} levels deep, which Substate does not accept (flatten it)`,
    )
  stack.push(value)
  let out: JsonValue
  if (Array.isArray(value)) {
    const arr: JsonValue[] = new Array(value.length)
    for (let i = 0; i < value.length; i++) arr[i] = copyAny(value[i], what, `${path}[${i}]`, stack)
    out = arr
  } else {
    const proto = Object.getPrototypeOf(value)
    if (proto !== Object.prototype && proto !== null) {
      const kind = (value as { constructor?: { name?: string } }).constructor?.name || 'object'
      throw new TypeError(
        `${describe(what, path)} is ${article(kind)}, which is not a JSON value (use a plain object)`,
      )
    }
    const obj: { [key: string]: JsonValue } = {}
    for (const key of Object.keys(value)) {
      const v = (value as Record<string, unknown>)[key]
      setOwn(obj, key, copyAny(v, what, path === '' ? key : `${path}.${key}`, stack))
    }
    out = obj
  }
  stack.pop()
  return out
}

function copyAny(value: unknown, what: JsonWhat, path: string, stack: object[]): JsonValue {
  if (typeof value === 'object' && value !== null) return copyObject(value, what, path, stack)
  return copyPrimitive(value, what, path)
}

/** Deep copy of a value already known to be JSON (no validation). */
export function cloneJson<T extends JsonValue | undefined>(value: T): T {
  if (typeof value !== 'object' || value === null) return value
  if (Array.isArray(value)) return value.map((v) => cloneJson(v)) as T
  const out: Record<string, JsonValue> = {}
  for (const key of Object.keys(value))
    setOwn(out, key, cloneJson((value as Record<string, JsonValue>)[key]!))
  return out as T
}

/**
 * `out[key] = v` as JSON means it: a key `__proto__` (which `JSON.parse` makes an own property)
 * stays an own property of the copy instead of setting the copy's prototype.
 */
function setOwn(out: Record<string, JsonValue>, key: string, v: JsonValue): void {
  if (key === '__proto__')
    Object.defineProperty(out, key, {
      value: v,
      enumerable: true,
      writable: true,
      configurable: true,
    })
  else out[key] = v
}

/** Deep equality of two JSON values (`undefined` means absent). Key order does not matter. */
export function jsonEqual(a: JsonValue | undefined, b: JsonValue | undefined): boolean {
  if (a === b) return true
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false
    for (let i = 0; i < a.length; i++) if (!jsonEqual(a[i], b[i])) return false
    return true
  }
  if (Array.isArray(b)) return false
  const ka = Object.keys(a)
  if (ka.length !== Object.keys(b).length) return false
  for (const k of ka) {
    if (!Object.hasOwn(b, k) || !jsonEqual(a[k], b[k])) return false
  }
  return true
}

/**
 * Freezes a value and every object and array in it, in place; returns it. For the private copies
 * an event carries (payload, old and new values), so that no handler or subscriber can change
 * what the others see. A primitive costs nothing; an object already frozen is taken as frozen
 * through (every value this is given was copied, then frozen from the top).
 */
export function freezeJson<T>(value: T): T {
  if (typeof value !== 'object' || value === null || Object.isFrozen(value)) return value
  Object.freeze(value)
  if (Array.isArray(value)) for (const v of value) freezeJson(v)
  else for (const k in value) freezeJson((value as Record<string, unknown>)[k])
  return value
}
