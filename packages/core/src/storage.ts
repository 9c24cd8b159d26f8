import type { JsonValue } from './json.js'

/** Which of a subject's two property maps a change concerns: `prop` (events) or `ext` (metadata). */
export type PropertyKind = 'prop' | 'ext'

/** A subject as stored: its properties and its extended properties. */
export interface SubjectSnapshot {
  readonly props: Record<string, JsonValue>
  readonly ext: Record<string, JsonValue>
  /**
   * The stored text of values that do not survive `JSON.stringify(JSON.parse(text))` unchanged
   * (written by another tool: Python's `json.dumps` spacing, integers above 2^53, `NaN`), keyed
   * by kind then name. A unit of work that read such a value sends this text as what it expects
   * (see {@link UnitCheck}). Adapters that compare values semantically leave out what their
   * comparison already accepts. Omitted when there is none.
   */
  readonly raw?: {
    readonly prop?: Readonly<Record<string, string>>
    readonly ext?: Readonly<Record<string, string>>
  }
  /**
   * Values that are not JSON at all (Python's bare `NaN`/`Infinity`), keyed by kind then name,
   * with why: they are left out of `props`/`ext` (their text is in `raw`), so the rest of the
   * subject loads; reading one is a `StorageError` naming it. Omitted when there is none.
   */
  readonly invalid?: {
    readonly prop?: Readonly<Record<string, string>>
    readonly ext?: Readonly<Record<string, string>>
  }
}

/**
 * A pure function from the stored value (`undefined` when absent) to the new value. Storage
 * applies it under compare-and-set and may call it more than once when it loses a race, so it must
 * not have side effects. Core validates what it returns as JSON before storage sees it.
 */
export type StorageUpdater = (current: JsonValue | undefined) => JsonValue

/** One change to one property. A change set holds at most one change per (kind, name). */
export type Change =
  | {
      readonly op: 'set'
      readonly kind: PropertyKind
      readonly name: string
      readonly value: JsonValue
    }
  | {
      readonly op: 'update'
      readonly kind: PropertyKind
      readonly name: string
      readonly update: StorageUpdater
    }
  | { readonly op: 'delete'; readonly kind: PropertyKind; readonly name: string }

/** Options of one {@link SubjectStorage.commit}. */
export interface CommitOptions {
  /**
   * Makes the commit idempotent per subject: when a commit with the same key was already applied
   * to this subject (within the storage's retention), nothing is written and the result has
   * `duplicate: true`. Used by ingress units of work so a redelivered message has no second effect.
   */
  readonly idempotencyKey?: string
  /**
   * Whether the caller needs the exact `oldValue` of `set` and `delete` changes. `false` is a
   * hint that lets an adapter write them blind (no read): their `oldValue` may then be
   * `undefined`. `newValue` is always exact, and `update` changes always report both values.
   * `subject.store()` passes `false`; write-through commits need the old value for their event.
   * @default true
   */
  readonly oldValues?: boolean
}

/** What one property became in a commit: exactly the value replaced and the value written. */
export interface CommittedChange {
  readonly kind: PropertyKind
  readonly name: string
  /** The stored value before the commit; `undefined` when the property did not exist. */
  readonly oldValue: JsonValue | undefined
  /**
   * The stored value after the commit; `undefined` when the property was deleted. May be the very
   * value the change set passed (a `set`) or its updater returned: not a copy, so a caller that
   * keeps it must not mutate it (core does not: it copies whatever it hands out).
   */
  readonly newValue: JsonValue | undefined
}

/** The result of a commit, one entry per change, in the order of the change set. */
export interface CommitResult {
  readonly changes: readonly CommittedChange[]
  /** True when the idempotency key had been seen: nothing was written and `changes` is empty. */
  readonly duplicate?: boolean
}

/**
 * A read a unit of work made, checked when it commits: the property must still hold exactly what
 * the unit saw.
 */
export interface UnitCheck {
  readonly kind: PropertyKind
  readonly name: string
  /**
   * The value read, as JSON text: `JSON.stringify(value)`, or the snapshot's `raw` text for a
   * value that does not survive a round trip; `null` when the property was absent. An adapter
   * compares it with what is stored byte for byte or as JSON values (PostgreSQL's jsonb `=`).
   */
  readonly expect: string | null
}

/** A read of all of a subject's property names of one kind (`keys()`, `getExtProps()`). */
export interface UnitNamesCheck {
  readonly kind: PropertyKind
  /** The names the unit saw, in any order: the stored names must be exactly these. */
  readonly names: readonly string[]
}

/** A write of a unit of work: the property's new value, as JSON text, or `null` to delete it. */
export interface UnitWrite {
  readonly kind: PropertyKind
  readonly name: string
  readonly value: string | null
}

/** What a unit of work read and wrote of one subject. */
export interface UnitEntry {
  readonly subject: string
  readonly checks: readonly UnitCheck[]
  readonly names?: readonly UnitNamesCheck[]
  /** At most one write per (kind, name). A subject left with no property is deleted. */
  readonly writes: readonly UnitWrite[]
}

/** A message a unit of work sends once it committed (an outbound event), kept in the outbox. */
export interface OutboxMessage {
  /** Unique and deterministic (derived from the unit's key): a re-send carries the same id. */
  readonly id: string
  /** What to send, opaque to storage (JSON text). */
  readonly body: string
}

/** One unit of work, committed by {@link SubjectStorage.commitUnit} all or nothing. */
export interface UnitCommit {
  /**
   * Makes the unit idempotent: when a unit with this key was already applied (within the
   * storage's retention), nothing is written and the result is `duplicate`.
   */
  readonly key?: string
  /**
   * One entry per subject (at most one per subject name). On Redis, all of them must live on one
   * server (one hash slot on Redis Cluster): the unit is one multi-key script.
   */
  readonly entries: readonly UnitEntry[]
  /** Messages written to the outbox in the same atomic operation. */
  readonly outbox?: readonly OutboxMessage[]
  /**
   * The outbox messages are held by `owner` for `lease` ms: the committing process sends them,
   * and only once the lease ran out may another process {@link OutboxStore.claim} them.
   */
  readonly owner?: string
  /** @default 30_000 */
  readonly lease?: number
}

/** What became of a {@link UnitCommit}. */
export type UnitCommitResult =
  /** Every check held: every write, the key and the outbox messages were stored. */
  | { readonly status: 'applied' }
  /** The key had been applied: nothing was written. */
  | { readonly status: 'duplicate' }
  /**
   * A check failed: nothing was written. `stale` holds, for at least every subject whose check
   * failed, what is stored now, so the caller can reload and run the unit again.
   */
  | { readonly status: 'conflict'; readonly stale: Readonly<Record<string, SubjectSnapshot>> }

/**
 * The durable outbox of a storage: messages units committed and processes must still send.
 * Leases use the server's clock, so replicas with skewed clocks agree.
 */
export interface OutboxStore {
  /**
   * Claims up to `limit` messages that no live lease holds (oldest first: on Redis, those whose
   * lease ran out first), for `lease` ms, under `owner`, and returns them. A message is handed to
   * one claimer per lease.
   */
  claim(owner: string, limit: number, lease: number): Promise<readonly OutboxMessage[]>
  /** Deletes delivered messages (ids not there are ignored). */
  remove(ids: readonly string[]): Promise<void>
  /** How many messages wait to be sent (claimed or not). */
  size(): Promise<number>
}

/** What a storage adapter can do; optional behaviour is declared here, never a throwing method. */
export interface StorageCapabilities {
  /** Survives the process (shared between processes). */
  readonly persistent: boolean
  /** Updaters are applied atomically against concurrent writers in other processes. */
  readonly atomic: boolean
  /** `commit` honours {@link CommitOptions.idempotencyKey}. */
  readonly idempotent: boolean
}

/**
 * Persists subjects. Every method rejects with a `StorageError` (with the driver error as `cause`)
 * when the backend fails, within a bounded time; none may hang or drop a write silently.
 */
export interface SubjectStorage {
  /** Short name used in error messages, e.g. `storage-redis`. */
  readonly name: string
  readonly capabilities: StorageCapabilities
  /** Loads a subject; an unknown subject is empty, not an error. */
  load(subject: string): Promise<SubjectSnapshot>
  /**
   * Applies a change set atomically: all of it or none of it. `update` changes are applied by
   * compare-and-set on the stored value, retried with backoff and jitter until a deadline (the
   * adapters' `conflictTimeout`), then `ConflictError`. Creating a subject that does not exist yet
   * must not race either.
   */
  commit(
    subject: string,
    changes: readonly Change[],
    options?: CommitOptions,
  ): Promise<CommitResult>
  /** Reads one property; `undefined` when absent. */
  get(subject: string, kind: PropertyKind, name: string): Promise<{ value: JsonValue } | undefined>
  /** Deletes the subject and returns what it held (empty if unknown). */
  flush(subject: string): Promise<SubjectSnapshot>
  /** Lists stored subject names, optionally filtered by a glob (same syntax as handlers). */
  subjects(pattern?: string): AsyncIterable<string>
  /**
   * Commits a unit of work: checks every entry's reads and, only when all hold (and `key` was not
   * applied), applies every write of every entry, records `key` and stores the outbox messages,
   * all in one atomic operation. Concurrent units never interleave: the result is one a serial
   * order of them could have produced. Optional: without it, units commit subject by subject.
   */
  commitUnit?(unit: UnitCommit): Promise<UnitCommitResult>
  /** The durable outbox units write to (optional; present with `commitUnit`). */
  readonly outbox?: OutboxStore
  /** Releases what the adapter created (never a client handed in by the caller). */
  close(): Promise<void>
}

/** A storage, or a function choosing one per subject name. */
export type StorageProvider = SubjectStorage | ((subject: string) => SubjectStorage)
