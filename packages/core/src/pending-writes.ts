import type { JsonValue } from './json.js'
import type { UnitOfWork } from './scope.js'
import type { Change, PropertyKind } from './storage.js'

/**
 * A pending change of one property, folded so a change set holds one change per property:
 * a `set`/`delete` replaces what was pending; updaters chain.
 */
export type PendingChange =
  | { readonly op: 'set'; readonly value: JsonValue }
  | { readonly op: 'delete' }
  | { readonly op: 'update'; readonly fns: readonly ((v: JsonValue | undefined) => JsonValue)[] }

/** One writer's folded pending change of a property (`unit` undefined: outside any unit). */
export interface Segment {
  readonly unit: UnitOfWork | undefined
  /** Replaced (never mutated) on each fold: a commit in flight compares it by identity. */
  change: PendingChange
}

/** Writes taken out of pending for one commit. */
export interface Taken {
  readonly kind: PropertyKind
  readonly name: string
  /** The taken segments folded, as the change to commit. */
  readonly change: Change
  readonly segs: readonly Segment[]
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

/** `value` with the pending writes `segs` applied in order (an updater that now throws is skipped). */
export function replay(
  segs: readonly Segment[] | undefined,
  value: JsonValue | undefined,
): JsonValue | undefined {
  if (segs === undefined) return value
  let out = value
  for (const seg of segs) {
    const p = seg.change
    if (p.op === 'set') out = p.value
    else if (p.op === 'delete') out = undefined
    else {
      try {
        out = applyFns(p, out)
      } catch {
        // It ran before on another base; storage will run it again at commit and report then.
      }
    }
  }
  return out
}

/** A pending change as the storage change that commits it. */
export function toChange(kind: PropertyKind, name: string, p: PendingChange): Change {
  if (p.op === 'update') return { op: 'update', kind, name, update: (v) => applyFns(p, v) }
  return p.op === 'set' ? { op: 'set', kind, name, value: p.value } : { op: 'delete', kind, name }
}

/**
 * The pending cached writes of one subject, per kind and property, folded per writer. Only code
 * outside units of work writes here today (the writer is always `undefined`): a unit's writes
 * stay in its own views until its commit (see `unit-state.ts`). The per-writer segments remain
 * from when units shared this ledger; collapsing them to one change per property is a possible
 * simplification.
 */
export class PendingWrites {
  readonly prop: Map<string, Segment[]> = new Map()
  readonly ext: Map<string, Segment[]> = new Map()

  get dirty(): boolean {
    return this.prop.size > 0 || this.ext.size > 0
  }

  of(kind: PropertyKind): Map<string, Segment[]> {
    return kind === 'prop' ? this.prop : this.ext
  }

  /** Records a cached write of `writer`, folded into that writer's pending change. */
  add(
    kind: PropertyKind,
    name: string,
    writer: UnitOfWork | undefined,
    next: PendingChange,
    newValue: JsonValue | undefined,
  ): void {
    const map = this.of(kind)
    const segs = map.get(name)
    if (segs === undefined) {
      map.set(name, [{ unit: writer, change: next }])
      return
    }
    let i = 0 // a loop, not findIndex: this runs on every cached write
    while (i < segs.length && segs[i]!.unit !== writer) i++
    if (i === segs.length) {
      segs.push({ unit: writer, change: next })
      return
    }
    const prev = segs[i]!.change
    // The only writer of this property: an updater after its set/delete is a set of the value
    // the cache just computed (no second run of the updater).
    const change =
      segs.length === 1 && next.op === 'update' && prev.op !== 'update'
        ? ({ op: 'set', value: newValue! } as const)
        : fold(prev, next)
    segs[i]!.change = change
  }

  /** Takes the writes `writer` may commit (its own and those outside units), folded per property. */
  take(writer: UnitOfWork | undefined): Taken[] {
    const taken: Taken[] = []
    for (const kind of KINDS) {
      const map = this.of(kind)
      for (const [name, segs] of map) {
        if (segs.length === 1) {
          // The common case: one writer of the property. (Deleting the current entry of a Map
          // being iterated is safe.)
          const seg = segs[0]!
          if (seg.unit !== writer && seg.unit !== undefined) continue
          map.delete(name)
          taken.push({ kind, name, change: toChange(kind, name, seg.change), segs })
          continue
        }
        let change: PendingChange | undefined
        const mine: Segment[] = []
        const rest: Segment[] = []
        for (const seg of segs) {
          if (seg.unit === writer || seg.unit === undefined) {
            change = fold(change, seg.change)
            mine.push(seg)
          } else rest.push(seg)
        }
        if (change === undefined) continue
        if (rest.length === 0) map.delete(name)
        else map.set(name, rest)
        taken.push({ kind, name, change: toChange(kind, name, change), segs: mine })
      }
    }
    return taken
  }

  /** Puts taken writes back in front of what was written meanwhile (a failed commit). */
  restore(taken: readonly Taken[]): void {
    for (const t of taken) {
      const map = this.of(t.kind)
      const merged = [...t.segs]
      for (const seg of map.get(t.name) ?? []) {
        const i = merged.findIndex((m) => m.unit === seg.unit)
        if (i < 0) merged.push(seg)
        else merged[i] = { unit: seg.unit, change: fold(merged[i]!.change, seg.change) }
      }
      map.set(t.name, merged)
    }
  }

  /**
   * After a write-through commit that included `own` (the writer's pending write as it was,
   * `ownChange`): unless the writer wrote the property again meanwhile, that write is now stored
   * and leaves pending. Returns the segments still pending for the property.
   */
  settle(
    kind: PropertyKind,
    name: string,
    own: Segment | undefined,
    ownChange: PendingChange | undefined,
  ): Segment[] | undefined {
    const map = this.of(kind)
    const segs = map.get(name)
    const done = own !== undefined && own.change === ownChange
    const rest = done ? segs?.filter((seg) => seg !== own) : segs
    if (done && segs !== undefined) {
      if (rest!.length === 0) map.delete(name)
      else map.set(name, rest!)
    }
    return rest
  }
}
