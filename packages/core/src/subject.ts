import { filter, map, type Observable } from 'rxjs'
import { PropertyNotFoundError, ShutdownError } from './errors.js'
import { cloneJson, copyJson, type JsonValue, jsonEqual } from './json.js'
import { applyFns, type PendingChange } from './pending-writes.js'
import { type Scope, scopes } from './scope.js'
import type { CommitOptions, PropertyKind, SubjectSnapshot, SubjectStorage } from './storage.js'
import { type Correction, SubjectCache } from './subject-cache.js'
import {
  type GetOptions,
  SUBJECT_DELETED,
  SUBJECT_PROPERTY_CHANGED,
  SUBJECT_PROPERTY_DELETED,
  type Subject,
  type SubstateEvent,
  type TimerHandle,
  type TimerSpec,
  type WriteOptions,
} from './types.js'
import type { UnitState, UnitView, ViewBase } from './unit-state.js'

/** How a subject's writes become events (the container's `Events`). */
export interface SubjectEvents {
  /**
   * Dispatches the change event of `property` of `subject` (`newValue` undefined: deleted) in the
   * scope `parent`; resolves with `value` after its cascade (rejects when a handler failed and the
   * container throws on failures at top level). The values are copies made for the event.
   */
  propertyChanged<T>(
    subject: SubjectState,
    property: string,
    oldValue: JsonValue | undefined,
    newValue: JsonValue | undefined,
    extra: Record<string, unknown> | undefined,
    /** The scope the change happened in (`scopes.getStore()`), read once by the caller. */
    parent: Scope | undefined,
    value: T,
  ): Promise<T>
  /** Dispatches an event of the subject itself (`subject-deleted`), resolving with `value`. */
  subjectEvent<T>(
    subject: SubjectState,
    type: string,
    payload: unknown,
    parent: Scope | undefined,
    value: T,
  ): Promise<T>
}

/** What a subject needs of its container. */
export interface SubjectHost {
  storageFor(subject: string): SubjectStorage
  /** How writes become events: the container's events (set once, before any subject exists). */
  events: SubjectEvents
  /** The live state for a name (a new one if it was evicted). */
  live(name: string): SubjectState
  /** Stores a durable timer firing `type` on `subject`. */
  addTimer(subject: string, type: string, when: TimerSpec, payload: unknown): Promise<TimerHandle>
  readonly events$: Observable<SubstateEvent>
  /** The container's lifecycle: once closing, writes from outside any handler are refused. */
  readonly state: { readonly closing: boolean }
}

const NOTHING: Promise<undefined> = Promise.resolve(undefined)

function checkName(property: unknown): asserts property is string {
  if (typeof property !== 'string' || property === '') {
    throw new TypeError(
      `a property name must be a non-empty string, got ${JSON.stringify(property)}`,
    )
  }
}

/**
 * The live state of one subject, shared by every handle of its name: the public subject API
 * (reads, writes and their change events, observation, timers). Outside units of work it reads
 * and writes its {@link SubjectCache} (values, pending writes, loading, commits); inside a unit
 * every read and write goes to the unit's view of the subject, whose committed base is that
 * cache. Cached values are owned copies; everything handed out is copied again.
 */
export class SubjectState implements Subject {
  readonly name: string
  readonly #host: SubjectHost
  readonly #cache: SubjectCache
  /** Units of work holding a view of this subject (it is not evicted meanwhile). */
  #units = 0
  /** The cache as a unit's view base. */
  readonly #sharedBase: () => SubjectCache
  /** Reads and loads in flight. */
  #busy = 0
  /** Set by the identity map's clock when the subject was used since the last sweep. */
  recentlyUsed = true
  /** Set when the identity map dropped this state: handles then forward to the live one. */
  evicted = false

  constructor(name: string, host: SubjectHost) {
    this.name = name
    this.#host = host
    const cache = new SubjectCache(name, host.storageFor(name), this)
    this.#cache = cache
    this.#sharedBase = () => cache
  }

  get dirty(): boolean {
    return this.#cache.dirty
  }

  /** Idle and clean: nothing pending, nothing in flight. Only such states may be evicted. */
  get evictable(): boolean {
    return this.#busy === 0 && this.#units === 0 && this.#cache.idle
  }

  /** Drops cached state and memory; later calls on this handle forward to the live state. */
  evict(): void {
    this.evicted = true
    this.#cache.drop()
  }

  // ---- reads ----

  get<T extends JsonValue = JsonValue>(property: string, options?: GetOptions<T>): Promise<T> {
    checkName(property)
    return this.#read('prop', property, options)
  }

  getExt<T extends JsonValue = JsonValue>(property: string, options?: GetOptions<T>): Promise<T> {
    checkName(property)
    return this.#read('ext', property, options)
  }

  async #read<T>(kind: PropertyKind, property: string, options?: GetOptions<T>): Promise<T> {
    if (this.evicted) return this.#forward().#read(kind, property, options)
    const unit = scopes.getStore()?.unit
    if (unit !== undefined) {
      // In a unit of work every read is of the unit's view (checked when it commits).
      const view = await this.#unitView(unit)
      const why = view.invalid(kind, property)
      if (why !== undefined) throw this.#cache.unreadable(kind, property, why)
      const v = view.read(kind, property)
      if (v !== undefined) return cloneJson(v) as T
      if (options && 'default' in options) return cloneJson(options.default as JsonValue) as T
      throw new PropertyNotFoundError(this.name, property, kind === 'ext')
    }
    let found: { value: JsonValue } | undefined
    this.#busy++
    try {
      if (options?.cache === false) {
        found = await this.#cache.fetch(kind, property)
      } else {
        const cache = this.#cache
        await cache.load()
        const map = kind === 'prop' ? cache.props : cache.ext
        if (map.has(property)) found = { value: cloneJson(map.get(property)!) }
        else {
          const why = cache.invalid(kind, property)
          if (why !== undefined) throw cache.unreadable(kind, property, why)
        }
      }
    } finally {
      this.#busy--
    }
    if (found) return found.value as T
    if (options && 'default' in options) return cloneJson(options.default as JsonValue) as T
    throw new PropertyNotFoundError(this.name, property, kind === 'ext')
  }

  async has(property: string): Promise<boolean> {
    checkName(property)
    if (this.evicted) return this.#forward().has(property)
    const unit = scopes.getStore()?.unit
    if (unit !== undefined) return (await this.#unitView(unit)).read('prop', property) !== undefined
    await this.#withLoad()
    return this.#cache.props.has(property)
  }

  async keys(): Promise<string[]> {
    if (this.evicted) return this.#forward().keys()
    const unit = scopes.getStore()?.unit
    if (unit !== undefined) return (await this.#unitView(unit)).names('prop')
    await this.#withLoad()
    return [...this.#cache.props.keys()]
  }

  async getExtProps(): Promise<Record<string, JsonValue>> {
    if (this.evicted) return this.#forward().getExtProps()
    const unit = scopes.getStore()?.unit
    if (unit !== undefined) {
      const view = await this.#unitView(unit)
      const out: [string, JsonValue][] = []
      for (const name of view.names('ext')) {
        const v = view.read('ext', name)
        if (v !== undefined) out.push([name, cloneJson(v)])
      }
      return Object.fromEntries(out)
    }
    await this.#withLoad()
    return this.#cache.copy('ext')
  }

  toJSON(): { name: string; props: Record<string, JsonValue>; ext: Record<string, JsonValue> } {
    if (this.evicted) return this.#forward().toJSON()
    return {
      name: this.name,
      props: this.#cache.copy('prop'),
      ext: this.#cache.copy('ext'),
    }
  }

  // ---- writes ----

  set<T extends JsonValue>(
    property: string,
    value: T | ((current: never) => T),
    options?: WriteOptions,
  ): Promise<T> {
    checkName(property)
    return this.#write('prop', property, this.#prepare(property, value), options) as Promise<T>
  }

  setExt<T extends JsonValue>(
    property: string,
    value: T | ((current: never) => T),
    options?: { cache?: boolean },
  ): Promise<T> {
    checkName(property)
    const next = this.#prepare(property, value)
    return this.#write('ext', property, next, { ...options, muted: true }) as Promise<T>
  }

  delete(property: string, options?: WriteOptions): Promise<boolean> {
    checkName(property)
    return this.#write('prop', property, { op: 'delete' }, options).then((r) => r !== NOT_FOUND)
  }

  deleteExt(property: string, options?: { cache?: boolean }): Promise<boolean> {
    checkName(property)
    return this.#write('ext', property, { op: 'delete' }, { ...options, muted: true }).then(
      (r) => r !== NOT_FOUND,
    )
  }

  /** Validates a value (synchronously: misuse throws at the call) or wraps an updater. */
  #prepare(property: string, value: unknown): PendingChange {
    // Fast path: a JSON primitive needs neither copy nor a description for errors.
    if (
      typeof value === 'string' ||
      (typeof value === 'number' && Number.isFinite(value)) ||
      typeof value === 'boolean' ||
      value === null
    )
      return { op: 'set', value }
    const what = (path: string): string =>
      `property "${path === '' ? property : path.startsWith('[') ? property + path : `${property}.${path}`}" of ${this.name}`
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

  /**
   * The hot path: when the subject is loaded, a cached write is applied synchronously and only
   * the change event is awaited (each extra async layer costs, AsyncLocalStorage hooks included).
   */
  #write(
    kind: PropertyKind,
    property: string,
    next: PendingChange,
    options: WriteOptions | undefined,
  ): Promise<JsonValue | undefined | typeof NOT_FOUND> {
    if (this.evicted) return this.#forward().#write(kind, property, next, options)
    const scope = scopes.getStore()
    // Like a top-level emit: once close() began, only running handlers may still write.
    if (scope === undefined && this.#host.state.closing) return Promise.reject(new ShutdownError())
    if (scope?.unit !== undefined)
      return this.#writeInUnit(scope, scope.unit, kind, property, next, options)
    if (options?.cache === false)
      return this.#track(this.#writeThrough(kind, property, next, options))
    if (this.#cache.loaded) return this.#writeCached(kind, property, next, options, scope)
    return this.#track(this.#cache.load()).then(() => this.#write(kind, property, next, options))
  }

  #writeCached(
    kind: PropertyKind,
    property: string,
    next: PendingChange,
    options: WriteOptions | undefined,
    scope: Scope | undefined,
  ): Promise<JsonValue | undefined | typeof NOT_FOUND> {
    const cache = this.#cache
    const map = kind === 'prop' ? cache.props : cache.ext
    const had = map.has(property)
    const oldValue = map.get(property)
    let newValue: JsonValue | undefined
    if (next.op === 'delete') {
      if (!had) return Promise.resolve(NOT_FOUND)
      map.delete(property)
    } else {
      try {
        newValue = next.op === 'set' ? next.value : applyFns(next, oldValue)
      } catch (e) {
        return Promise.reject(e)
      }
      if (had && jsonEqual(oldValue, newValue)) return Promise.resolve(cloneJson(newValue))
      map.set(property, newValue)
    }
    cache.addPending(kind, property, next, newValue)
    this.recentlyUsed = true
    const result = next.op === 'delete' ? oldValue : cloneJson(newValue)
    if (kind === 'ext' || options?.muted) return Promise.resolve(result)
    const extra = options?.extra
    return this.#emitChange(property, had ? oldValue : undefined, newValue, extra, scope, result)
  }

  /**
   * A write inside a unit of work: to the unit's view (stored when the unit commits, all or
   * nothing). A `set` that emits reads the old value (the event carries it, and whether it changed
   * decides the event), so the commit checks it; a muted `set` and `setExt` write blind.
   * Write-through (`cache: false`) is the same here: the unit's commit is the write.
   */
  #writeInUnit(
    scope: Scope,
    unit: UnitState,
    kind: PropertyKind,
    property: string,
    next: PendingChange,
    options: WriteOptions | undefined,
  ): Promise<JsonValue | undefined | typeof NOT_FOUND> {
    const view = unit.viewOf(this)
    if (view === undefined)
      return Promise.resolve(this.#unitView(unit)).then(() =>
        this.#writeInUnit(scope, unit, kind, property, next, options),
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
    this.recentlyUsed = true
    const result = next.op === 'delete' ? cloneJson(oldValue) : cloneJson(newValue)
    if (muted) return Promise.resolve(result)
    return this.#emitChange(property, oldValue, newValue, options?.extra, scope, result)
  }

  /**
   * The unit's view of this subject: on the shared cache (loaded first), or on a load of its own
   * when writes made outside units are pending here (a unit never reads uncommitted writes).
   */
  #unitView(unit: UnitState): UnitView | Promise<UnitView> {
    const existing = unit.viewOf(this)
    if (existing !== undefined) return existing
    const cache = this.#cache
    if (!cache.loaded) return this.#track(cache.load()).then(() => this.#unitView(unit))
    if (cache.dirty)
      return cache.loadBase((base) => unit.viewOf(this) ?? this.#enter(unit, () => base))
    return this.#enter(unit, this.#sharedBase)
  }

  #enter(unit: UnitState, base: () => ViewBase): UnitView {
    this.#units++
    this.recentlyUsed = true
    return unit.view(this, this.name, base)
  }

  /** The unit that held a view of this subject ended. */
  leave(): void {
    this.#units--
  }

  /**
   * A unit's writes were committed: the cache takes them (with writes made outside units that are
   * still pending on top).
   */
  unitCommitted(view: UnitView): void {
    if (!this.evicted) this.#cache.unitCommitted(view)
  }

  /**
   * Reloads the cache from storage, to see what other processes wrote (writes still pending here
   * stay on top). Inside a unit of work it does nothing: what a unit reads is checked anyway.
   */
  refresh(): Promise<void> {
    if (this.evicted) return this.#forward().refresh()
    if (scopes.getStore()?.unit !== undefined) return NOTHING
    return this.#track(this.#cache.refresh())
  }

  /** What storage holds now (another process wrote it): the cache takes it. */
  reloadFrom(snap: SubjectSnapshot): void {
    if (!this.evicted) this.#cache.reloadFrom(snap)
  }

  #writeThrough(
    kind: PropertyKind,
    property: string,
    next: PendingChange,
    options: WriteOptions | undefined,
  ): Promise<JsonValue | undefined | typeof NOT_FOUND> {
    return this.#cache.writeThrough(kind, property, next).then((c) => {
      // Events go out after the commit section, so a handler may write this subject again.
      if (next.op === 'delete' && c.oldValue === undefined) return NOT_FOUND
      const result = next.op === 'delete' ? c.oldValue : cloneJson(c.newValue)
      if (kind === 'prop' && !options?.muted && !jsonEqual(c.oldValue, c.newValue)) {
        const extra = options?.extra
        return this.#emitChange(property, c.oldValue, c.newValue, extra, scopes.getStore(), result)
      }
      return result
    })
  }

  /**
   * Commits pending cached writes, all or nothing: those of the current unit of work (inside one)
   * and those made outside any unit. On failure they stay pending and it rejects.
   * (Callbacks rather than async functions: this runs once per subject of a batch store, and
   * every promise costs, AsyncLocalStorage hooks included.)
   */
  store(options?: CommitOptions): Promise<void> {
    if (this.evicted) return this.#forward().store(options)
    // In a unit of work, its writes are stored by its commit, all of them at once.
    if (scopes.getStore()?.unit !== undefined) return NOTHING
    // Nothing to write and no commit to wait for.
    if (this.#cache.idle) return NOTHING
    return this.#cache
      .store(options?.idempotencyKey)
      .then((corrections) => (corrections === undefined ? undefined : this.#announce(corrections)))
  }

  async #announce(corrections: readonly Correction[]): Promise<void> {
    for (const [name, from, to] of corrections) {
      await this.#emitChange(name, from, to, undefined, scopes.getStore(), undefined)
    }
  }

  /**
   * Deletes the subject; emits one `subject-property-deleted` per property (as KRules does), then
   * `subject-deleted` with what it held. Ext properties emit nothing here, as everywhere else.
   */
  async flush(): Promise<void> {
    if (this.evicted) return this.#forward().flush()
    const scope = scopes.getStore()
    let payload: { props: Record<string, JsonValue>; ext_props: Record<string, JsonValue> }
    if (scope?.unit !== undefined) {
      // In a unit: every property read (the commit checks them) and deleted in its view.
      const view = await this.#unitView(scope.unit)
      const take = (kind: PropertyKind): Record<string, JsonValue> => {
        const out: [string, JsonValue][] = []
        for (const name of view.names(kind)) {
          const v = view.read(kind, name)
          if (v !== undefined) out.push([name, v])
          view.write(kind, name, undefined)
        }
        return Object.fromEntries(out)
      }
      payload = { props: take('prop'), ext_props: take('ext') }
    } else {
      payload = await this.#cache.flush()
    }
    for (const [name, old] of Object.entries(payload.props))
      await this.#emitChange(name, old, undefined, undefined, scopes.getStore(), undefined)
    await this.#host.events.subjectEvent(
      this,
      SUBJECT_DELETED,
      { props: cloneJson(payload.props), ext_props: cloneJson(payload.ext_props) },
      scopes.getStore(),
      undefined,
    )
  }

  // ---- timers ----

  schedule(type: string, when: TimerSpec, payload?: unknown): Promise<TimerHandle> {
    return this.#host.addTimer(this.name, type, when, payload)
  }

  // ---- observation ----

  get changes$(): Observable<SubstateEvent> {
    const name = this.name
    return this.#host.events$.pipe(
      filter(
        (e) =>
          e.subject === name &&
          (e.type === SUBJECT_PROPERTY_CHANGED || e.type === SUBJECT_PROPERTY_DELETED),
      ),
    )
  }

  watch(property: string): Observable<JsonValue | undefined> {
    checkName(property)
    return this.changes$.pipe(
      filter((e) => e.propertyName === property),
      map((e) => (e.type === SUBJECT_PROPERTY_CHANGED ? e.newValue : undefined)),
    )
  }

  // ---- internals ----

  #forward(): SubjectState {
    return this.#host.live(this.name)
  }

  #withLoad(): Promise<void> {
    return this.#cache.loaded ? Promise.resolve() : this.#track(this.#cache.load())
  }

  /** Counts `work` as in flight (not evictable) until it settles. */
  #track<T>(work: Promise<T>): Promise<T> {
    this.#busy++
    return work.finally(() => {
      this.#busy--
    })
  }

  /** Emits the change event of a property; resolves with `result` after its cascade. */
  #emitChange<T>(
    property: string,
    oldValue: JsonValue | undefined,
    newValue: JsonValue | undefined,
    extra: Record<string, unknown> | undefined,
    scope: Scope | undefined,
    result: T,
  ): Promise<T> {
    return this.#host.events.propertyChanged(
      this,
      property,
      cloneJson(oldValue),
      cloneJson(newValue),
      extra,
      scope,
      result,
    )
  }
}

const NOT_FOUND: unique symbol = Symbol('not found')
