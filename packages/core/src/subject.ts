import { filter, map, type Observable } from 'rxjs'
import { isSubstateError, PropertyNotFoundError, StorageError } from './errors.js'
import { cloneJson, copyJson, type JsonValue, jsonEqual } from './json.js'
import {
  applyFns,
  fold,
  type PendingChange,
  PendingWrites,
  replay,
  type Taken,
  toChange,
} from './pending-writes.js'
import { type Scope, scopes, type UnitMember, type UnitOfWork } from './scope.js'
import { SerialQueue } from './serial-queue.js'
import type {
  Change,
  CommitOptions,
  CommittedChange,
  PropertyKind,
  SubjectSnapshot,
  SubjectStorage,
} from './storage.js'
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

/** What a subject needs of its container. */
export interface SubjectHost {
  storageFor(subject: string): SubjectStorage
  /**
   * Dispatches a change event for `subject` in the current scope; resolves with `value` after its
   * cascade (rejects when a handler failed and the container throws on failures at top level).
   */
  emitChange<T>(
    subject: SubjectState,
    type: string,
    payload: unknown,
    change: { propertyName: string; oldValue?: JsonValue; newValue?: JsonValue } | undefined,
    extra: Record<string, unknown> | undefined,
    /** The scope the change happened in (`scopes.getStore()`), read once by the caller. */
    parent: Scope | undefined,
    value: T,
  ): Promise<T>
  /** The live state for a name (a new one if it was evicted). */
  live(name: string): SubjectState
  /** Stores a durable timer firing `type` on `subject`. */
  addTimer(subject: string, type: string, when: TimerSpec, payload: unknown): Promise<TimerHandle>
  readonly events$: Observable<SubstateEvent>
}

/** A cached value that storage corrected: `[property, cached, stored]`, announced after a store. */
type Correction = [string, JsonValue | undefined, JsonValue | undefined]

/** What every `store()` without an idempotency key passes: it needs no old values. */
const BLIND: CommitOptions = { oldValues: false }
const NOTHING: Promise<undefined> = Promise.resolve(undefined)

function checkName(property: unknown): asserts property is string {
  if (typeof property !== 'string' || property === '') {
    throw new TypeError(
      `a property name must be a non-empty string, got ${JSON.stringify(property)}`,
    )
  }
}

const wrapStorage = (storage: SubjectStorage, op: string, subject: string, e: unknown): Error =>
  isSubstateError(e)
    ? e
    : new StorageError(storage.name, op, subject, e instanceof Error ? e.message : String(e), {
        cause: e,
      })

/**
 * The live state of one subject, shared by every handle of its name. Cached values are owned
 * copies; everything handed out is copied again.
 */
export class SubjectState implements Subject, UnitMember {
  readonly name: string
  readonly #host: SubjectHost
  readonly #storage: SubjectStorage
  #props = new Map<string, JsonValue>()
  #ext = new Map<string, JsonValue>()
  #loaded = false
  #loading: Promise<void> | undefined
  /** Pending cached writes (see {@link PendingWrites}); undefined until the first. */
  #pending: PendingWrites | undefined
  /**
   * Commits of this subject run one after another (store, write-through, flush); undefined while
   * none runs (an idle subject holds no queue).
   */
  #commits: SerialQueue | undefined
  /** Reads and loads in flight. */
  #busy = 0
  /** Set by the identity map's clock when the subject was used since the last sweep. */
  recentlyUsed = true
  /** Set when the identity map dropped this state: handles then forward to the live one. */
  evicted = false

  constructor(name: string, host: SubjectHost) {
    this.name = name
    this.#host = host
    this.#storage = host.storageFor(name)
  }

  get dirty(): boolean {
    return this.#pending?.dirty ?? false
  }

  /** Idle and clean: nothing pending, nothing in flight. Only such states may be evicted. */
  get evictable(): boolean {
    return this.#busy === 0 && this.#commits === undefined && !this.dirty
  }

  /** Drops cached state and memory; later calls on this handle forward to the live state. */
  evict(): void {
    this.evicted = true
    this.#props = new Map()
    this.#ext = new Map()
    this.#loaded = false
  }

  /**
   * Drops the pending writes of a failed unit of work; the cache is then rebuilt from storage plus
   * the writes still pending, so nothing the unit did is stored and others' writes stay.
   */
  dropUnit(unit: UnitOfWork): void {
    if (this.#pending?.dropUnit(unit)) this.#rebase()
  }

  /** Forgets the cached values: the next access reloads them and replays the pending writes. */
  #rebase(): void {
    this.#props.clear()
    this.#ext.clear()
    this.#loaded = false
    this.#loading = undefined
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
    let found: { value: JsonValue } | undefined
    this.#busy++
    try {
      if (options?.cache === false) {
        found = await this.#storage
          .get(this.name, kind, property)
          .catch((e) => Promise.reject(wrapStorage(this.#storage, 'get', this.name, e)))
      } else {
        await this.#load()
        const map = kind === 'prop' ? this.#props : this.#ext
        if (map.has(property)) found = { value: cloneJson(map.get(property)!) }
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
    await this.#withLoad()
    return this.#props.has(property)
  }

  async keys(): Promise<string[]> {
    if (this.evicted) return this.#forward().keys()
    await this.#withLoad()
    return [...this.#props.keys()]
  }

  async getExtProps(): Promise<Record<string, JsonValue>> {
    if (this.evicted) return this.#forward().getExtProps()
    await this.#withLoad()
    return Object.fromEntries([...this.#ext].map(([k, v]) => [k, cloneJson(v)]))
  }

  toJSON(): { name: string; props: Record<string, JsonValue>; ext: Record<string, JsonValue> } {
    if (this.evicted) return this.#forward().toJSON()
    return {
      name: this.name,
      props: Object.fromEntries([...this.#props].map(([k, v]) => [k, cloneJson(v)])),
      ext: Object.fromEntries([...this.#ext].map(([k, v]) => [k, cloneJson(v)])),
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
    const what = `property "${property}" of ${this.name}`
    if (typeof value === 'function') {
      const fn = value as (v: JsonValue | undefined) => unknown
      return {
        op: 'update',
        fns: [(v) => copyJson(fn(cloneJson(v)), `the value an updater returned for ${what}`)],
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
    if (options?.cache === false)
      return this.#track(this.#writeThrough(kind, property, next, options))
    if (this.#loaded) return this.#writeCached(kind, property, next, options)
    return this.#track(this.#load()).then(() => this.#write(kind, property, next, options))
  }

  #writeCached(
    kind: PropertyKind,
    property: string,
    next: PendingChange,
    options: WriteOptions | undefined,
  ): Promise<JsonValue | undefined | typeof NOT_FOUND> {
    const map = kind === 'prop' ? this.#props : this.#ext
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
    const scope = scopes.getStore()
    this.#pending ??= new PendingWrites()
    this.#pending.add(kind, property, scope?.unit, next, newValue)
    this.#touch(scope)
    const result = next.op === 'delete' ? oldValue : cloneJson(newValue)
    if (kind === 'ext' || options?.muted) return Promise.resolve(result)
    const extra = options?.extra
    return this.#emitChange(property, had ? oldValue : undefined, newValue, extra, scope, result)
  }

  #writeThrough(
    kind: PropertyKind,
    property: string,
    next: PendingChange,
    options: WriteOptions | undefined,
  ): Promise<JsonValue | undefined | typeof NOT_FOUND> {
    const unit = scopes.getStore()?.unit
    return this.#serial(() => this.#writeThroughSection(kind, property, next, unit)).then((c) => {
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

  /** The commit of a write-through write, in the subject's commit order. */
  #writeThroughSection(
    kind: PropertyKind,
    property: string,
    next: PendingChange,
    unit: UnitOfWork | undefined,
  ): Promise<CommittedChange> {
    // This writer's pending cached write of the property is committed with this one, in order.
    const own = this.#pending
      ?.of(kind)
      .get(property)
      ?.find((seg) => seg.unit === unit)
    const ownChange = own?.change
    const change = toChange(kind, property, fold(ownChange, next))
    return this.#commit([change], undefined, 'commit').then((result) => {
      const committed = result.changes[0]!
      // Unless the writer wrote this property again meanwhile, its pending write is now stored.
      const rest = this.#pending?.settle(kind, property, own, ownChange)
      if (this.#loaded) this.#cacheStored(kind, property, replay(rest, committed.newValue))
      return committed
    })
  }

  /**
   * Commits pending cached writes, all or nothing: those of the current unit of work (inside one)
   * and those made outside any unit. On failure they stay pending and it rejects.
   * (Callbacks rather than async functions: this runs once per subject of a batch store, and
   * every promise costs, AsyncLocalStorage hooks included.)
   */
  store(options?: CommitOptions & { unit?: UnitOfWork }): Promise<void> {
    if (this.evicted) return this.#forward().store(options)
    // Nothing to write and no commit to wait for.
    if (!this.dirty && this.#commits === undefined) return NOTHING
    const unit = options?.unit ?? scopes.getStore()?.unit
    return this.#serial(() => this.#storeSection(unit, options?.idempotencyKey)).then(
      (corrections) => (corrections === undefined ? undefined : this.#announce(corrections)),
    )
  }

  #storeSection(
    unit: UnitOfWork | undefined,
    idempotencyKey: string | undefined,
  ): Promise<Correction[] | undefined> {
    const taken = this.#pending?.take(unit) ?? []
    if (taken.length === 0) return NOTHING
    // store() compares stored new values with the cache; old values are not needed.
    const options: CommitOptions =
      idempotencyKey === undefined ? BLIND : { oldValues: false, idempotencyKey }
    const failed = (e: unknown): never => {
      this.#restore(taken) // nothing was written: the writes stay pending, first in line
      throw wrapStorage(this.#storage, 'store', this.name, e)
    }
    let committing: ReturnType<SubjectStorage['commit']>
    try {
      committing = this.#storage.commit(
        this.name,
        taken.map((t) => t.change),
        options,
      )
    } catch (e) {
      // Restored at once: the writes are never missing from pending, even for a microtask.
      this.#restore(taken)
      return Promise.reject(wrapStorage(this.#storage, 'store', this.name, e))
    }
    return committing.then((result) => {
      const corrections = this.#stored(result)
      if (this.#loaded) return corrections
      // The cache was dropped (a failed unit, a duplicate): refill it now, best effort (a failed
      // load only means the next access loads), so the subject reads as stored right after.
      return this.#load().then(
        () => undefined,
        () => undefined,
      )
    }, failed)
  }

  /**
   * Brings the cache in line with what a store wrote. Another process may have written in
   * between: the stored value wins, and is announced (returned as corrections).
   */
  #stored(result: Awaited<ReturnType<SubjectStorage['commit']>>): Correction[] | undefined {
    if (result.duplicate) {
      // Already applied by an earlier delivery: the cache holds a second application.
      this.#rebase()
      return undefined
    }
    // Dropped meanwhile (a failed unit rebased it): the next access reloads what storage holds.
    if (!this.#loaded) return undefined
    let corrections: Correction[] | undefined
    const pending = this.#pending
    for (const c of result.changes) {
      const map = c.kind === 'prop' ? this.#props : this.#ext
      const expected = replay(pending?.of(c.kind).get(c.name), c.newValue)
      const cached = map.get(c.name)
      if (cached !== expected && !jsonEqual(cached, expected)) {
        this.#cacheStored(c.kind, c.name, expected)
        if (c.kind === 'prop') {
          corrections ??= []
          corrections.push([c.name, cached, expected])
        }
      }
    }
    return corrections
  }

  async #announce(corrections: readonly Correction[]): Promise<void> {
    for (const [name, from, to] of corrections) {
      await this.#emitChange(name, from, to, undefined, scopes.getStore(), undefined)
    }
  }

  async flush(): Promise<void> {
    if (this.evicted) return this.#forward().flush()
    const payload = await this.#serial(async () => {
      let snap: SubjectSnapshot
      try {
        snap = await this.#storage.flush(this.name)
      } catch (e) {
        throw wrapStorage(this.#storage, 'flush', this.name, e)
      }
      const cached = this.#loaded ? this.toJSON() : undefined
      this.#pending = undefined
      this.#props.clear()
      this.#ext.clear()
      this.#loaded = true
      this.#loading = undefined
      this.#touch()
      return { props: cached?.props ?? snap.props, ext_props: cached?.ext ?? snap.ext }
    })
    await this.#host.emitChange(
      this,
      SUBJECT_DELETED,
      payload,
      undefined,
      undefined,
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

  #touch(scope: Scope | undefined = scopes.getStore()): void {
    this.recentlyUsed = true
    const unit = scope?.unit
    if (unit !== undefined) unit.touched.add(this)
  }

  #withLoad(): Promise<void> {
    return this.#loaded ? Promise.resolve() : this.#track(this.#load())
  }

  /** Puts taken writes back in front of what was written meanwhile (a failed commit). */
  #restore(taken: readonly Taken[]): void {
    this.#pending ??= new PendingWrites()
    this.#pending.restore(taken)
  }

  /** Counts `work` as in flight (not evictable) until it settles. */
  #track<T>(work: Promise<T>): Promise<T> {
    this.#busy++
    return work.finally(() => {
      this.#busy--
    })
  }

  #load(): Promise<void> {
    this.recentlyUsed = true
    if (this.#loaded) return Promise.resolve()
    this.#loading ??= this.#storage.load(this.name).then(
      (snap) => {
        for (const [k, v] of Object.entries(snap.props)) this.#props.set(k, v)
        for (const [k, v] of Object.entries(snap.ext)) this.#ext.set(k, v)
        // After a rebase, the writes still pending apply on top of what storage holds.
        for (const kind of ['prop', 'ext'] as const) {
          const map = kind === 'prop' ? this.#props : this.#ext
          for (const [name, segs] of this.#pending?.of(kind) ?? []) {
            this.#cacheStored(kind, name, replay(segs, map.get(name)))
          }
        }
        this.#loaded = true
        this.#loading = undefined
      },
      (e: unknown) => {
        this.#loading = undefined
        throw wrapStorage(this.#storage, 'load', this.name, e)
      },
    )
    return this.#loading
  }

  /** Runs `fn` as this subject's next commit section (see {@link SerialQueue}). */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    this.#commits ??= new SerialQueue(() => {
      this.#commits = undefined
    })
    return this.#commits.run(fn)
  }

  #commit(
    changes: Change[],
    options: CommitOptions | undefined,
    op: string,
  ): Promise<Awaited<ReturnType<SubjectStorage['commit']>>> {
    return this.#storage.commit(this.name, changes, options).catch((e: unknown) => {
      throw wrapStorage(this.#storage, op, this.name, e)
    })
  }

  #cacheStored(kind: PropertyKind, name: string, value: JsonValue | undefined): void {
    const map = kind === 'prop' ? this.#props : this.#ext
    if (value === undefined) map.delete(name)
    else map.set(name, value)
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
    const deleted = newValue === undefined
    const old = cloneJson(oldValue)
    const value = cloneJson(newValue)
    return deleted
      ? this.#host.emitChange(
          this,
          SUBJECT_PROPERTY_DELETED,
          { property_name: property, old_value: old },
          { propertyName: property, oldValue: old },
          extra,
          scope,
          result,
        )
      : this.#host.emitChange(
          this,
          SUBJECT_PROPERTY_CHANGED,
          { property_name: property, old_value: old, value },
          { propertyName: property, oldValue: old, newValue: value },
          extra,
          scope,
          result,
        )
  }
}

const NOT_FOUND: unique symbol = Symbol('not found')
