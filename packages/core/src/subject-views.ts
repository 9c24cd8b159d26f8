import { PropertyNotFoundError } from './errors.js'
import { cloneJson, type JsonValue, jsonEqual } from './json.js'
import { applyFns, type PendingChange } from './pending-writes.js'
import type { Scope } from './scope.js'
import type { PropertyKind, SubjectSnapshot } from './storage.js'
import type { SubjectCache } from './subject-cache.js'
import type { GetOptions, WriteOptions } from './types.js'
import type { UnitState, UnitView, ViewBase } from './unit-state.js'

/** What a `delete` of an absent property resolves with (the subject's `delete` then says false). */
export const NOT_FOUND: unique symbol = Symbol('not found')

/** What a write resolves with: the value written (a copy), the deleted one, or {@link NOT_FOUND}. */
export type WriteResult = JsonValue | undefined | typeof NOT_FOUND

/** The subject state the views are of (units find its view by it). */
export interface ViewOwner {
  readonly name: string
  recentlyUsed: boolean
  /** Emits the change event of a property; resolves with `result` after its cascade. */
  emitChange<T>(
    property: string,
    oldValue: JsonValue | undefined,
    newValue: JsonValue | undefined,
    extra: Record<string, unknown> | undefined,
    scope: Scope | undefined,
    result: T,
  ): Promise<T>
}

/**
 * A subject inside units of work: how a unit gets its view of the subject, and what reads and
 * writes through that view mean. A view's committed base is the subject's shared cache, or a load
 * of its own when writes made outside units are pending (a unit never reads uncommitted writes).
 * What a unit reads is checked, and what it writes stored, by its one commit (see `unit-state.ts`).
 */
export class SubjectViews {
  readonly #owner: ViewOwner
  readonly #cache: SubjectCache
  /** The cache as a unit's view base. */
  readonly #shared: () => ViewBase
  /** Units of work holding a view of this subject (it is not evicted meanwhile). */
  #units = 0

  constructor(owner: ViewOwner, cache: SubjectCache) {
    this.#owner = owner
    this.#cache = cache
    this.#shared = () => cache
  }

  /** True while a unit of work holds a view of the subject. */
  get held(): boolean {
    return this.#units !== 0
  }

  /**
   * The unit's view of this subject: on the shared cache (loaded first), or on a load of its own
   * when writes made outside units are pending here.
   */
  of(unit: UnitState): UnitView | Promise<UnitView> {
    const existing = unit.viewOf(this.#owner)
    if (existing !== undefined) return existing
    const cache = this.#cache
    if (!cache.loaded) return cache.track(cache.load()).then(() => this.of(unit))
    if (cache.dirty) {
      return cache.loadSnapshot(
        (snap) => unit.viewOf(this.#owner) ?? this.#enter(unit, () => snapshotBase(snap)),
      )
    }
    return this.#enter(unit, this.#shared)
  }

  #enter(unit: UnitState, base: () => ViewBase): UnitView {
    this.#units++
    this.#owner.recentlyUsed = true
    return unit.view(this.#owner, this.#owner.name, base)
  }

  /** The unit that held a view of this subject ended. */
  leave(): void {
    this.#units--
  }

  /** A property as the unit sees it (a copy), else `options.default`; throws when there is none. */
  read<T>(view: UnitView, kind: PropertyKind, property: string, options?: GetOptions<T>): T {
    const why = view.invalid(kind, property)
    if (why !== undefined) throw this.#cache.unreadable(kind, property, why)
    const v = view.read(kind, property)
    if (v !== undefined) return cloneJson(v) as T
    if (options && 'default' in options) return cloneJson(options.default as JsonValue) as T
    throw new PropertyNotFoundError(this.#owner.name, property, kind === 'ext')
  }

  /** Copies of the ext properties as the unit sees them. */
  extProps(view: UnitView): Record<string, JsonValue> {
    const out: [string, JsonValue][] = []
    for (const name of view.names('ext')) {
      const v = view.read('ext', name)
      if (v !== undefined) out.push([name, cloneJson(v)])
    }
    return Object.fromEntries(out)
  }

  /** `flush` in a unit: every property read (the commit checks them) and deleted in its view. */
  flush(view: UnitView): {
    props: Record<string, JsonValue>
    ext_props: Record<string, JsonValue>
  } {
    const take = (kind: PropertyKind): Record<string, JsonValue> => {
      const out: [string, JsonValue][] = []
      for (const name of view.names(kind)) {
        const v = view.read(kind, name)
        if (v !== undefined) out.push([name, v])
        view.write(kind, name, undefined)
      }
      return Object.fromEntries(out)
    }
    return { props: take('prop'), ext_props: take('ext') }
  }

  /**
   * A write inside a unit of work: to the unit's view (stored when the unit commits, all or
   * nothing). A `set` that emits reads the old value (the event carries it, and whether it changed
   * decides the event), so the commit checks it; a muted `set` and `setExt` write blind.
   * Write-through (`cache: false`) is the same here: the unit's commit is the write.
   */
  write(
    scope: Scope,
    unit: UnitState,
    kind: PropertyKind,
    property: string,
    next: PendingChange,
    options: WriteOptions | undefined,
  ): Promise<WriteResult> {
    const view = unit.viewOf(this.#owner)
    if (view === undefined)
      return Promise.resolve(this.of(unit)).then(() =>
        this.write(scope, unit, kind, property, next, options),
      )
    const muted = kind === 'ext' || options?.muted === true
    const blind = muted && next.op === 'set'
    let oldValue: JsonValue | undefined
    if (!blind) {
      const why = view.invalid(kind, property)
      // A value that is not JSON can be replaced, not read (an updater would need it).
      if (why !== undefined && next.op === 'update')
        return Promise.reject(this.#cache.unreadable(kind, property, why))
      oldValue = view.read(kind, property)
    }
    const had = oldValue !== undefined
    let newValue: JsonValue | undefined
    if (next.op === 'delete') {
      if (!had) return Promise.resolve(NOT_FOUND)
      view.write(kind, property, undefined)
    } else {
      try {
        newValue = next.op === 'set' ? next.value : applyFns(next, oldValue)
      } catch (e) {
        return Promise.reject(e)
      }
      if (had && jsonEqual(oldValue, newValue)) return Promise.resolve(cloneJson(newValue))
      view.write(kind, property, newValue)
    }
    this.#owner.recentlyUsed = true
    const result = next.op === 'delete' ? cloneJson(oldValue) : cloneJson(newValue)
    if (muted) return Promise.resolve(result)
    return this.#owner.emitChange(property, oldValue, newValue, options?.extra, scope, result)
  }
}

/** A unit's view base on a snapshot of its own (a subject with writes pending outside units). */
function snapshotBase(snap: SubjectSnapshot): ViewBase {
  const of = (kind: PropertyKind) => (kind === 'prop' ? snap.props : snap.ext)
  return {
    value: (kind, name) => (Object.hasOwn(of(kind), name) ? of(kind)[name] : undefined),
    names: (kind) => Object.keys(of(kind)),
    raw: (kind, name) => snap.raw?.[kind]?.[name],
    invalid: (kind, name) => snap.invalid?.[kind]?.[name],
  }
}
