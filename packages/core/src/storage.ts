import type { JsonValue } from './json.js'

/** Which of a subject's two property maps a change concerns: `prop` (events) or `ext` (metadata). */
export type PropertyKind = 'prop' | 'ext'

/** A subject as stored: its properties and its extended properties. */
export interface SubjectSnapshot {
  readonly props: Record<string, JsonValue>
  readonly ext: Record<string, JsonValue>
}

/**
 * A pure function from the stored value (`undefined` when absent) to the new value. Storage
 * applies it under compare-and-set and may call it more than once when it loses a race, so it must
 * not have side effects. Core validates what it returns as JSON before storage sees it.
 */
export type Updater = (current: JsonValue | undefined) => JsonValue

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
      readonly update: Updater
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
   * compare-and-set on the stored value, retried boundedly, then `ConflictError`. Creating a
   * subject that does not exist yet must not race either.
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
  /** Releases what the adapter created (never a client handed in by the caller). */
  close(): Promise<void>
}

/** A storage, or a function choosing one per subject name. */
export type StorageProvider = SubjectStorage | ((subject: string) => SubjectStorage)
