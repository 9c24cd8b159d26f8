import { filter, map, type Observable } from 'rxjs'
import { PropertyNotFoundError, ShutdownError } from './errors.js'
import { cloneJson, type JsonValue, jsonEqual } from './json.js'
import { applyFns, type PendingChange, toPending } from './pending-writes.js'
import { type Scope, scopes } from './scope.js'
import type { CommitOptions, PropertyKind, SubjectSnapshot } from './storage.js'
import { type Correction, SubjectCache } from './subject-cache.js'
import type { SubjectHost } from './subject-host.js'
import { NOT_FOUND, SubjectViews, type ViewOwner, type WriteResult } from './subject-views.js'
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
import type { UnitView } from './unit-state.js'

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
export class SubjectState implements Subject, ViewOwner {
  readonly name: string
  readonly #host: SubjectHost
  readonly #cache: SubjectCache
  /** Its views in units of work; made when a unit first touches it. */
  #views: SubjectViews | undefined
  /** Set by the identity map's clock when the subject was used since the last sweep. */
  recentlyUsed = true
  /** Set when the identity map dropped this state: handles then forward to the live one. */
  evicted = false

  constructor(name: string, host: SubjectHost) {
    this.name = name
    this.#host = host
    this.#cache = new SubjectCache(name, host.storageFor(name), this)
  }

  get dirty(): boolean {
    return this.#cache.dirty
  }

  /** Idle and clean: nothing pending, nothing in flight. Only such states may be evicted. */
  get evictable(): boolean {
    return this.#cache.idle && !this.#views?.held
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

  /**
   * A read. From a view the unit already has, or a loaded cache, it is answered without an async
   * frame (every promise costs, AsyncLocalStorage's hooks included); else after the load.
   */
  #read<T>(kind: PropertyKind, property: string, options?: GetOptions<T>): Promise<T> {
    if (this.evicted) return this.#forward().#read(kind, property, options)
    const unit = scopes.getStore()?.unit
    if (unit !== undefined) {
      // In a unit of work every read is of the unit's view (checked when it commits).
      const views = this.#inUnits()
      const view = views.of(unit)
      if (view instanceof Promise) return view.then((v) => views.read(v, kind, property, options))
      try {
        return Promise.resolve(views.read(view, kind, property, options))
      } catch (e) {
        return Promise.reject(e)
      }
    }
    const cache = this.#cache
    if (cache.loaded && options?.cache !== false) {
      this.recentlyUsed = true
      const map = cache.of(kind)
      if (map.has(property)) return Promise.resolve(cloneJson(map.get(property)!) as T)
    }
    return this.#readAfterLoad(kind, property, options)
  }

  async #readAfterLoad<T>(
    kind: PropertyKind,
    property: string,
    options?: GetOptions<T>,
  ): Promise<T> {
    let found: { value: JsonValue } | undefined
    const cache = this.#cache
    cache.busy++
    try {
      if (options?.cache === false) {
        found = await cache.fetch(kind, property)
      } else {
        await cache.load()
        const map = cache.of(kind)
        if (map.has(property)) found = { value: cloneJson(map.get(property)!) }
        else {
          const why = cache.invalid(kind, property)
          if (why !== undefined) throw cache.unreadable(kind, property, why)
        }
      }
    } finally {
      cache.busy--
    }
    if (found) return found.value as T
    if (options && 'default' in options) return cloneJson(options.default as JsonValue) as T
    throw new PropertyNotFoundError(this.name, property, kind === 'ext')
  }

  async has(property: string): Promise<boolean> {
    checkName(property)
    if (this.evicted) return this.#forward().has(property)
    const unit = scopes.getStore()?.unit
    if (unit !== undefined)
      return (await this.#inUnits().of(unit)).read('prop', property) !== undefined
    await this.#withLoad()
    return this.#cache.props.has(property)
  }

  async keys(): Promise<string[]> {
    if (this.evicted) return this.#forward().keys()
    const unit = scopes.getStore()?.unit
    if (unit !== undefined) return (await this.#inUnits().of(unit)).names('prop')
    await this.#withLoad()
    return [...this.#cache.props.keys()]
  }

  async getExtProps(): Promise<Record<string, JsonValue>> {
    if (this.evicted) return this.#forward().getExtProps()
    const unit = scopes.getStore()?.unit
    if (unit !== undefined) {
      const views = this.#inUnits()
      return views.extProps(await views.of(unit))
    }
    await this.#withLoad()
    return this.#cache.copy('ext')
  }

  toJSON(): { name: string; props: Record<string, JsonValue>; ext: Record<string, JsonValue> } {
    if (this.evicted) return this.#forward().toJSON()
    return { name: this.name, props: this.#cache.copy('prop'), ext: this.#cache.copy('ext') }
  }

  // ---- writes ----

  set<T extends JsonValue>(
    property: string,
    value: T | ((current: never) => T),
    options?: WriteOptions,
  ): Promise<T> {
    checkName(property)
    return this.#write(
      'prop',
      property,
      toPending(value, property, this.name),
      options,
    ) as Promise<T>
  }

  setExt<T extends JsonValue>(
    property: string,
    value: T | ((current: never) => T),
    options?: { cache?: boolean },
  ): Promise<T> {
    checkName(property)
    const next = toPending(value, property, this.name)
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

  /**
   * The hot path: when the subject is loaded, a cached write is applied synchronously and only
   * the change event is awaited (each extra async layer costs, AsyncLocalStorage hooks included).
   */
  #write(
    kind: PropertyKind,
    property: string,
    next: PendingChange,
    options: WriteOptions | undefined,
  ): Promise<WriteResult> {
    if (this.evicted) return this.#forward().#write(kind, property, next, options)
    const scope = scopes.getStore()
    // Like a top-level emit: once close() began, only running handlers may still write.
    if (scope === undefined && this.#host.state.closing) return Promise.reject(new ShutdownError())
    if (scope?.unit !== undefined)
      return this.#inUnits().write(scope, scope.unit, kind, property, next, options)
    const cache = this.#cache
    if (options?.cache === false)
      return cache.track(this.#writeThrough(kind, property, next, options))
    if (cache.loaded) return this.#writeCached(cache, kind, property, next, options, scope)
    return cache.track(cache.load()).then(() => this.#write(kind, property, next, options))
  }

  #writeCached(
    cache: SubjectCache,
    kind: PropertyKind,
    property: string,
    next: PendingChange,
    options: WriteOptions | undefined,
    scope: Scope | undefined,
  ): Promise<WriteResult> {
    const map = cache.writable(kind)
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
    return this.emitChange(property, had ? oldValue : undefined, newValue, extra, scope, result)
  }

  /** The unit that held a view of this subject ended. */
  leave(): void {
    this.#inUnits().leave()
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
    const cache = this.#cache
    return cache.track(cache.loadSnapshot((snap) => this.reloadFrom(snap)))
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
  ): Promise<WriteResult> {
    return this.#cache.writeThrough(kind, property, next).then((c) => {
      // Events go out after the commit section, so a handler may write this subject again.
      if (next.op === 'delete' && c.oldValue === undefined) return NOT_FOUND
      const result = next.op === 'delete' ? c.oldValue : cloneJson(c.newValue)
      if (kind === 'prop' && !options?.muted && !jsonEqual(c.oldValue, c.newValue)) {
        const extra = options?.extra
        return this.emitChange(property, c.oldValue, c.newValue, extra, scopes.getStore(), result)
      }
      return result
    })
  }

  /**
   * Commits the cached writes made outside units of work, all or nothing; on failure they stay
   * pending and it rejects. (Callbacks rather than async functions: this runs once per subject of
   * a batch store, and every promise costs, AsyncLocalStorage hooks included.)
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
      await this.emitChange(name, from, to, undefined, scopes.getStore(), undefined)
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
      const views = this.#inUnits()
      payload = views.flush(await views.of(scope.unit))
    } else {
      payload = await this.#cache.flush()
    }
    for (const [name, old] of Object.entries(payload.props))
      await this.emitChange(name, old, undefined, undefined, scopes.getStore(), undefined)
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
    // The host's live states are made by the identity map: all of them are SubjectStates.
    return this.#host.live(this.name) as SubjectState
  }

  #withLoad(): Promise<void> {
    const cache = this.#cache
    return cache.loaded ? Promise.resolve() : cache.track(cache.load())
  }

  #inUnits(): SubjectViews {
    this.#views ??= new SubjectViews(this, this.#cache)
    return this.#views
  }

  /**
   * Emits the change event of a property; resolves with `result` after its cascade.
   * @internal for the subject's views in units of work.
   */
  emitChange<T>(
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
