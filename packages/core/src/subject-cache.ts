import { isSubstateError, StorageError } from './errors.js'
import { cloneJson, type JsonValue, jsonEqual } from './json.js'
import {
  fold,
  type PendingChange,
  PendingWrites,
  replay,
  type Taken,
  toChange,
} from './pending-writes.js'
import { SerialQueue } from './serial-queue.js'
import type {
  Change,
  CommitOptions,
  CommittedChange,
  PropertyKind,
  SubjectSnapshot,
  SubjectStorage,
} from './storage.js'
import type { UnitView, ViewBase } from './unit-state.js'

/** A cached value that storage corrected: `[property, cached, stored]`, announced after a store. */
export type Correction = [string, JsonValue | undefined, JsonValue | undefined]

/** What every `store()` without an idempotency key passes: it needs no old values. */
const BLIND: CommitOptions = { oldValues: false }
const NOTHING: Promise<undefined> = Promise.resolve(undefined)
const KINDS = ['prop', 'ext'] as const

type CommitResult = Awaited<ReturnType<SubjectStorage['commit']>>

const wrapStorage = (storage: SubjectStorage, op: string, subject: string, e: unknown): Error =>
  isSubstateError(e)
    ? e
    : new StorageError(storage.name, op, subject, e instanceof Error ? e.message : String(e), {
        cause: e,
      })

/** The values of a kind the subject holds none of (never written: typed read-only). */
const NO_VALUES: ReadonlyMap<string, JsonValue> = new Map()

/**
 * One subject's side of storage: its cached values (owned copies), the writes made outside units
 * of work and not yet stored ({@link PendingWrites}), loading, and its commits (store,
 * write-through, flush), run one after another through a {@link SerialQueue}. It is also the
 * committed base units of work read the subject from (a {@link ViewBase}).
 *
 * The subject (`subject.ts`) applies its cached writes to {@link props} and {@link ext} itself and
 * records them with {@link addPending}: that is the hot path of every `set`.
 */
export class SubjectCache implements ViewBase {
  readonly name: string
  readonly #storage: SubjectStorage
  /** Told when the subject was used (its `recentlyUsed`, for the identity map's clock). */
  readonly #owner: { recentlyUsed: boolean }
  /** Cached properties, owned copies; the subject writes here directly. */
  props: Map<string, JsonValue> = new Map()
  /** Cached ext properties, owned copies: made at the first (most subjects have none). */
  #ext: Map<string, JsonValue> | undefined
  /** True once the cache holds what storage holds (with pending writes on top). */
  loaded = false
  #loading: Promise<void> | undefined
  /** Stored texts of values that do not survive a JSON round trip, by `p`/`e` field key. */
  #raw: Map<string, string> | undefined
  /** Stored values that are not JSON, by field key, with why. */
  #invalid: Map<string, string> | undefined
  /** Pending cached writes (see {@link PendingWrites}); undefined until the first. */
  #pending: PendingWrites | undefined
  /**
   * Commits of this subject run one after another (store, write-through, flush); undefined while
   * none runs (an idle subject holds no queue).
   */
  #commits: SerialQueue | undefined
  /** Reads and loads in flight (the subject counts its reads here too). */
  busy = 0

  constructor(name: string, storage: SubjectStorage, owner: { recentlyUsed: boolean }) {
    this.name = name
    this.#storage = storage
    this.#owner = owner
  }

  get dirty(): boolean {
    return this.#pending?.dirty ?? false
  }

  /** Nothing pending, nothing in flight (no read, load or commit). */
  get idle(): boolean {
    return this.busy === 0 && this.#commits === undefined && !this.dirty
  }

  /** Counts `work` as in flight (see {@link idle}) until it settles. */
  track<T>(work: Promise<T>): Promise<T> {
    this.busy++
    return work.finally(() => {
      this.busy--
    })
  }

  /** Drops the cached values and their memory (the subject was evicted). */
  drop(): void {
    this.props = new Map()
    this.#ext = undefined
    this.loaded = false
  }

  // ---- the committed base of units of work ----

  value(kind: PropertyKind, name: string): JsonValue | undefined {
    return this.of(kind).get(name)
  }

  names(kind: PropertyKind): Iterable<string> {
    return this.of(kind).keys()
  }

  /** The cached values of one kind, to read. */
  of(kind: PropertyKind): ReadonlyMap<string, JsonValue> {
    return kind === 'prop' ? this.props : (this.#ext ?? NO_VALUES)
  }

  /** The cached values of one kind, to write (the ext map made at the first write). */
  writable(kind: PropertyKind): Map<string, JsonValue> {
    if (kind === 'prop') return this.props
    this.#ext ??= new Map()
    return this.#ext
  }

  raw(kind: PropertyKind, name: string): string | undefined {
    return this.#raw?.get((kind === 'prop' ? 'p' : 'e') + name)
  }

  invalid(kind: PropertyKind, name: string): string | undefined {
    return this.#invalid?.get((kind === 'prop' ? 'p' : 'e') + name)
  }

  /** Loads what storage holds and calls `then` with it (the cache is left as it is). */
  loadSnapshot<T>(then: (snap: SubjectSnapshot) => T): Promise<T> {
    return this.#storage
      .load(this.name)
      .then(then, (e: unknown) => Promise.reject(wrapStorage(this.#storage, 'load', this.name, e)))
  }

  /**
   * A unit's writes were committed: the cache takes them (with writes made outside units that are
   * still pending on top).
   */
  unitCommitted(view: UnitView): void {
    if (!this.loaded) return
    for (const [kind, name, value] of view.writes()) {
      this.#forgetStored(kind, name)
      this.#cacheStored(kind, name, replay(this.#pending?.get(kind, name), value))
    }
  }

  // ---- reads and loads ----

  /** Reads one property from storage, past the cache (`get(…, { cache: false })`). */
  fetch(kind: PropertyKind, property: string): Promise<{ value: JsonValue } | undefined> {
    return this.#storage
      .get(this.name, kind, property)
      .catch((e) => Promise.reject(wrapStorage(this.#storage, 'get', this.name, e)))
  }

  /** Copies of the cached values of one kind. */
  copy(kind: PropertyKind): Record<string, JsonValue> {
    const map = this.of(kind)
    return Object.fromEntries([...map].map(([k, v]) => [k, cloneJson(v)]))
  }

  /** The error of a read of a stored value that is not JSON (`why`). */
  unreadable(kind: PropertyKind, property: string, why: string): StorageError {
    return new StorageError(
      this.#storage.name,
      'read',
      this.name,
      `the stored value of ${kind === 'ext' ? 'ext property' : 'property'} "${property}" is not JSON (${why}); set it to replace it`,
    )
  }

  /** Fills the cache from storage unless loaded (callers meanwhile share one load). */
  load(): Promise<void> {
    this.#owner.recentlyUsed = true
    if (this.loaded) return Promise.resolve()
    this.#loading ??= this.#storage.load(this.name).then(
      (snap) => {
        this.#fill(snap)
        this.loaded = true
        this.#loading = undefined
      },
      (e: unknown) => {
        this.#loading = undefined
        throw wrapStorage(this.#storage, 'load', this.name, e)
      },
    )
    return this.#loading
  }

  /** What storage holds now (another process wrote it): the cache takes it. */
  reloadFrom(snap: SubjectSnapshot): void {
    this.#fill(snap)
    this.loaded = true
    this.#loading = undefined
  }

  /** Forgets the cached values: the next access reloads them and replays the pending writes. */
  #rebase(): void {
    this.props.clear()
    this.#ext = undefined
    this.loaded = false
    this.#loading = undefined
  }

  /** Fills the (empty) cache from a snapshot, with the writes still pending on top. */
  #fill(snap: SubjectSnapshot): void {
    this.props.clear()
    this.#ext = undefined
    for (const [k, v] of Object.entries(snap.props)) this.props.set(k, v)
    for (const [k, v] of Object.entries(snap.ext)) this.writable('ext').set(k, v)
    this.#raw = undefined
    this.#invalid = undefined
    for (const kind of KINDS) {
      const p = kind === 'prop' ? 'p' : 'e'
      for (const [name, raw] of Object.entries(snap.raw?.[kind] ?? {})) {
        this.#raw ??= new Map()
        this.#raw.set(p + name, raw)
      }
      for (const [name, why] of Object.entries(snap.invalid?.[kind] ?? {})) {
        this.#invalid ??= new Map()
        this.#invalid.set(p + name, why)
      }
    }
    // After a rebase, the writes still pending apply on top of what storage holds.
    for (const kind of KINDS) {
      const map = this.of(kind)
      for (const [name, slot] of this.#pending?.of(kind) ?? [])
        this.#cacheStored(kind, name, replay(slot.change, map.get(name)))
    }
  }

  // ---- writes and commits ----

  /**
   * Records a cached write the subject applied to {@link props} or {@link ext} (`newValue`: what
   * the cache holds now) as pending. The hot path of every cached `set`.
   */
  addPending(
    kind: PropertyKind,
    property: string,
    next: PendingChange,
    newValue: JsonValue | undefined,
  ): void {
    if (this.#raw !== undefined || this.#invalid !== undefined) this.#forgetStored(kind, property)
    this.#pending ??= new PendingWrites()
    this.#pending.add(kind, property, next, newValue)
  }

  /**
   * Commits a write-through write, in the subject's commit order, with the pending cached write of
   * the property folded in before it; the cache takes what was stored.
   */
  writeThrough(
    kind: PropertyKind,
    property: string,
    next: PendingChange,
  ): Promise<CommittedChange> {
    return this.#serial(() => this.#writeThroughSection(kind, property, next))
  }

  #writeThroughSection(
    kind: PropertyKind,
    property: string,
    next: PendingChange,
  ): Promise<CommittedChange> {
    // The pending cached write of the property is committed with this one, in order: taken out
    // of pending (as store() takes its writes), so a write made meanwhile starts afresh.
    const own = this.#pending?.takeOne(kind, property)
    const change = toChange(kind, property, fold(own?.pending, next))
    return this.#commit([change], undefined, 'commit').then(
      (result) => {
        const committed = result.changes[0]!
        this.#forgetStored(kind, property)
        // What was written meanwhile applies on top of what was stored.
        const rest = this.#pending?.get(kind, property)
        if (this.loaded) this.#cacheStored(kind, property, replay(rest, committed.newValue))
        return committed
      },
      (e: unknown) => {
        if (own !== undefined) this.#pending!.restore([own]) // nothing was written
        throw e
      },
    )
  }

  /**
   * Commits the pending cached writes, all or nothing, as the subject's next commit; on failure
   * they stay pending and it rejects. Resolves with the cached values storage corrected.
   */
  store(idempotencyKey: string | undefined): Promise<Correction[] | undefined> {
    return this.#serial(() => this.#storeSection(idempotencyKey))
  }

  #storeSection(idempotencyKey: string | undefined): Promise<Correction[] | undefined> {
    const taken = this.#pending?.take() ?? []
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
      if (this.loaded) return corrections
      // The cache was dropped (a failed unit, a duplicate): refill it now, best effort (a failed
      // load only means the next access loads), so the subject reads as stored right after.
      return this.load().then(
        () => undefined,
        () => undefined,
      )
    }, failed)
  }

  /**
   * Brings the cache in line with what a store wrote. Another process may have written in
   * between: the stored value wins, and is announced (returned as corrections).
   */
  #stored(result: CommitResult): Correction[] | undefined {
    if (result.duplicate) {
      // Already applied by an earlier delivery: the cache holds a second application.
      this.#rebase()
      return undefined
    }
    // Dropped meanwhile (a failed unit rebased it): the next access reloads what storage holds.
    if (!this.loaded) return undefined
    let corrections: Correction[] | undefined
    const pending = this.#pending
    for (const c of result.changes) {
      const map = this.of(c.kind)
      const expected = replay(pending?.get(c.kind, c.name), c.newValue)
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

  /**
   * Deletes the subject in storage, as the subject's next commit, and empties the cache (pending
   * writes included). Resolves with what it held: the cache's values if loaded, else storage's.
   */
  flush(): Promise<{ props: Record<string, JsonValue>; ext_props: Record<string, JsonValue> }> {
    return this.#serial(async () => {
      let snap: SubjectSnapshot
      try {
        snap = await this.#storage.flush(this.name)
      } catch (e) {
        throw wrapStorage(this.#storage, 'flush', this.name, e)
      }
      const cached = this.loaded ? { props: this.copy('prop'), ext: this.copy('ext') } : undefined
      this.#pending = undefined
      this.props.clear()
      this.#ext = undefined
      this.#raw = undefined
      this.#invalid = undefined
      this.loaded = true
      this.#loading = undefined
      this.#owner.recentlyUsed = true
      return { props: cached?.props ?? snap.props, ext_props: cached?.ext ?? snap.ext }
    })
  }

  /** Puts taken writes back in front of what was written meanwhile (a failed commit). */
  #restore(taken: readonly Taken[]): void {
    this.#pending ??= new PendingWrites()
    this.#pending.restore(taken)
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
  ): Promise<CommitResult> {
    return this.#storage.commit(this.name, changes, options).catch((e: unknown) => {
      throw wrapStorage(this.#storage, op, this.name, e)
    })
  }

  #forgetStored(kind: PropertyKind, name: string): void {
    if (this.#raw === undefined && this.#invalid === undefined) return
    const key = (kind === 'prop' ? 'p' : 'e') + name
    this.#raw?.delete(key)
    this.#invalid?.delete(key)
  }

  #cacheStored(kind: PropertyKind, name: string, value: JsonValue | undefined): void {
    if (value !== undefined) this.writable(kind).set(name, value)
    else if (kind === 'prop') this.props.delete(name)
    else this.#ext?.delete(name)
  }
}
