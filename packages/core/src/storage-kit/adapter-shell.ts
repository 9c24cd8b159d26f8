/*
 * The part every adapter built on the kit repeats: its queues shared per client or pool, the
 * guard of each operation (closed storage, operations in flight for close()), the preamble of
 * commits and units, and close(). The Redis and PostgreSQL adapters only add their backend.
 */
import { StorageError } from '../errors.js'
import type {
  Change,
  CommitOptions,
  CommitResult,
  UnitCommit,
  UnitCommitResult,
} from '../storage.js'
import {
  type CommitBackend,
  CommitQueue,
  type CommitRetryPolicy,
  type CompareAndSetOptions,
  retryPolicy,
} from './commit-queue.js'
import { InFlight } from './in-flight.js'
import { type UnitBackend, UnitQueue } from './unit-queue.js'

/** Options every adapter built on {@link AdapterShell} takes, besides its client. */
export interface AdapterOptions extends CompareAndSetOptions {
  /**
   * Longest time one operation may take, waiting for the connection included, in milliseconds;
   * past it, the operation rejects with a `StorageError` whose cause is a `TimeoutError`. (A
   * commit that timed out may still be applied by the server later, as with any network timeout:
   * idempotency keys make retries safe.)
   * @default 5000
   */
  readonly timeout?: number
  /**
   * How long an idempotency key (of a commit or of a unit of work) is remembered, at least, in
   * seconds.
   * @default 86_400
   */
  readonly idempotencyTtl?: number
}

/** How an {@link AdapterShell} reaches its backend. */
export interface ShellConfig {
  /** Adapter name, for errors. */
  readonly name: string
  /**
   * The client or pool: storages on one connection with equal `settings` share their queues (so
   * commits of one subject through it run one at a time, and concurrent ones share round trips).
   */
  readonly connection: object
  /** Everything the backends' closures depend on (prefix, table, timeout...). */
  readonly settings: string
  readonly policy: CommitRetryPolicy
  readonly commits: () => CommitBackend
  readonly units: () => UnitBackend
  /**
   * Runs one operation other than a commit; rejects with a `StorageError` (the adapter turns
   * driver errors into one).
   */
  readonly run: <T>(
    operation: string,
    subject: string | undefined,
    fn: () => Promise<T>,
  ) => Promise<T>
  /** Checks a unit before it is queued: an error message, or `undefined` when it can be sent. */
  readonly validateUnit?: (unit: UnitCommit) => string | undefined
}

interface Queues {
  readonly commits: CommitQueue
  readonly units: UnitQueue
}

/** Queues of each connection, by settings. */
const shared = new WeakMap<object, Map<string, Queues>>()

/** The shared shell of a storage adapter. */
export class AdapterShell {
  readonly #config: ShellConfig
  readonly #queues: Queues
  /** This storage's operations in flight, which close() waits for. */
  readonly #inFlight = new InFlight()
  #closed = false

  constructor(config: ShellConfig) {
    this.#config = config
    let byKey = shared.get(config.connection)
    if (!byKey) {
      byKey = new Map()
      shared.set(config.connection, byKey)
    }
    let queues = byKey.get(config.settings)
    if (!queues) {
      queues = { commits: new CommitQueue(config.commits()), units: new UnitQueue(config.units()) }
      byKey.set(config.settings, queues)
    }
    this.#queues = queues
  }

  get closed(): boolean {
    return this.#closed
  }

  #refused(operation: string, subject: string | undefined): Promise<never> {
    return Promise.reject(
      new StorageError(this.#config.name, operation, subject, 'the storage is closed'),
    )
  }

  /** Runs one operation (not a commit): refused once closed, counted until it settles. */
  op<T>(operation: string, subject: string | undefined, fn: () => Promise<T>): Promise<T> {
    if (this.#closed) return this.#refused(operation, subject)
    return this.#inFlight.track(this.#config.run(operation, subject, fn))
  }

  /** Queues a commit (see `SubjectStorage.commit`). */
  commit(
    subject: string,
    changes: readonly Change[],
    options?: CommitOptions,
  ): Promise<CommitResult> {
    if (this.#closed) return this.#refused('commit', subject)
    const key = options?.idempotencyKey
    if (changes.length === 0 && key === undefined) return Promise.resolve({ changes: [] })
    this.#inFlight.start()
    return this.#queues.commits.commit(
      subject,
      changes,
      key,
      this.#config.policy,
      options?.oldValues !== false,
      this.#inFlight.end,
    )
  }

  /** Queues a unit of work (see `SubjectStorage.commitUnit`). */
  commitUnit(unit: UnitCommit): Promise<UnitCommitResult> {
    const first = unit.entries[0]?.subject
    if (this.#closed) return this.#refused('commitUnit', first)
    const invalid = this.#config.validateUnit?.(unit)
    if (invalid)
      return Promise.reject(new StorageError(this.#config.name, 'commitUnit', first, invalid))
    this.#inFlight.start()
    return this.#queues.units.commit(unit, this.#inFlight.end)
  }

  /** Forgets what the commit queue remembers of a subject (after it was flushed). */
  forget(subject: string): void {
    this.#queues.commits.forget(subject)
  }

  /** Refuses new operations and waits for those in flight (and `also`). */
  async close(...also: Promise<unknown>[]): Promise<void> {
    this.#closed = true
    await Promise.allSettled([this.#inFlight.idle(), ...also])
  }
}

/** The compare-and-set policy and common settings of {@link AdapterOptions}, with defaults. */
export function adapterDefaults(options: AdapterOptions): {
  readonly timeout: number
  readonly idempotencyTtl: number
  readonly policy: CommitRetryPolicy
} {
  return {
    timeout: options.timeout ?? 5000,
    idempotencyTtl: options.idempotencyTtl ?? 86_400,
    policy: retryPolicy(options),
  }
}
