import { cloneJson, copyJson, type JsonValue } from './json.js'
import type { Change, PropertyKind } from './storage.js'

/**
 * A pending change of one property, folded so a change set holds one change per property:
 * a `set`/`delete` replaces what was pending; updaters chain.
 */
export type PendingChange =
  | { readonly op: 'set'; readonly value: JsonValue }
  | { readonly op: 'delete' }
  | { readonly op: 'update'; readonly fns: readonly ((v: JsonValue | undefined) => JsonValue)[] }

/** The pending write of one property (its `change` replaced, never mutated, on each write). */
export interface Slot {
  change: PendingChange
}

/** Writes taken out of pending for one commit. */
export interface Taken {
  readonly kind: PropertyKind
  readonly name: string
  /** The change to commit. */
  readonly change: Change
  /** The pending write it came from (put back in front on a failed commit). */
  readonly pending: PendingChange
}

const KINDS = ['prop', 'ext'] as const

/** The value an update's functions compute from `v`, in order. */
export const applyFns = (
  fns: PendingChange & { op: 'update' },
  v: JsonValue | undefined,
): JsonValue => {
  let out = v
  for (const f of fns.fns) out = f(out)
  return out as JsonValue
}

/** `next` after `prev`, as one pending change. */
export function fold(prev: PendingChange | undefined, next: PendingChange): PendingChange {
  if (prev === undefined || next.op !== 'update') return next
  if (prev.op === 'update') return { op: 'update', fns: [...prev.fns, ...next.fns] }
  return { op: 'set', value: applyFns(next, prev.op === 'set' ? prev.value : undefined) }
}

/** `value` with the pending write `p` applied (an updater that now throws is skipped). */
export function replay(
  p: PendingChange | undefined,
  value: JsonValue | undefined,
): JsonValue | undefined {
  if (p === undefined || p.op === 'delete') return p === undefined ? value : undefined
  if (p.op === 'set') return p.value
  try {
    return applyFns(p, value)
  } catch {
    // It ran before on another base; storage will run it again at commit and report then.
    return value
  }
}

/**
 * A value written to `property` of `subject` as a pending change: validated and copied
 * (synchronously: misuse throws at the call), or an updater wrapped to copy what it gets and
 * returns.
 */
export function toPending(value: unknown, property: string, subject: string): PendingChange {
  // Fast path: a JSON primitive needs neither copy nor a description for errors.
  if (
    typeof value === 'string' ||
    (typeof value === 'number' && Number.isFinite(value)) ||
    typeof value === 'boolean' ||
    value === null
  )
    return { op: 'set', value }
  const what = (path: string): string =>
    `property "${path === '' ? property : path.startsWith('[') ? property + path : `${property}.${path}`}" of ${subject}`
  if (typeof value === 'function') {
    const fn = value as (v: JsonValue | undefined) => unknown
    return {
      op: 'update',
      fns: [
        (v) => copyJson(fn(cloneJson(v)), (p) => `the value an updater returned for ${what(p)}`),
      ],
    }
  }
  return { op: 'set', value: copyJson(value, what) }
}

/** A pending change as the storage change that commits it. */
export function toChange(kind: PropertyKind, name: string, p: PendingChange): Change {
  if (p.op === 'update') return { op: 'update', kind, name, update: (v) => applyFns(p, v) }
  return p.op === 'set' ? { op: 'set', kind, name, value: p.value } : { op: 'delete', kind, name }
}

/**
 * The cached writes of one subject not yet stored, one folded write per kind and property. Only
 * code outside units of work writes here: a unit's writes stay in its own views until its commit
 * (see `unit-state.ts`).
 */
export class PendingWrites {
  readonly prop: Map<string, Slot> = new Map()
  readonly ext: Map<string, Slot> = new Map()

  get dirty(): boolean {
    return this.prop.size > 0 || this.ext.size > 0
  }

  of(kind: PropertyKind): Map<string, Slot> {
    return kind === 'prop' ? this.prop : this.ext
  }

  /** The pending write of a property, if any. */
  get(kind: PropertyKind, name: string): PendingChange | undefined {
    return this.of(kind).get(name)?.change
  }

  /**
   * Records a cached write (`newValue`: what the cache holds after it), folded into what was
   * pending. An updater after a set or delete is a set of the value the cache just computed (no
   * second run of the updater). The hot path of every cached `set`.
   */
  add(
    kind: PropertyKind,
    name: string,
    next: PendingChange,
    newValue: JsonValue | undefined,
  ): void {
    const map = kind === 'prop' ? this.prop : this.ext
    const slot = map.get(name)
    if (slot === undefined) map.set(name, { change: next })
    else if (next.op !== 'update') slot.change = next
    else
      slot.change =
        slot.change.op === 'update'
          ? { op: 'update', fns: [...slot.change.fns, ...next.fns] }
          : { op: 'set', value: newValue! }
  }

  /** Takes every pending write, for one commit. */
  take(): Taken[] {
    const taken: Taken[] = []
    for (const kind of KINDS) {
      const map = this.of(kind)
      for (const [name, slot] of map)
        taken.push({ kind, name, change: toChange(kind, name, slot.change), pending: slot.change })
      map.clear()
    }
    return taken
  }

  /** Puts taken writes back in front of what was written meanwhile (a failed commit). */
  restore(taken: readonly Taken[]): void {
    for (const t of taken) {
      const map = this.of(t.kind)
      const slot = map.get(t.name)
      if (slot === undefined) map.set(t.name, { change: t.pending })
      else slot.change = fold(t.pending, slot.change)
    }
  }

  /** Takes the pending write of one property, for one commit. */
  takeOne(kind: PropertyKind, name: string): Taken | undefined {
    const map = this.of(kind)
    const slot = map.get(name)
    if (slot === undefined) return undefined
    map.delete(name)
    return { kind, name, change: toChange(kind, name, slot.change), pending: slot.change }
  }
}
