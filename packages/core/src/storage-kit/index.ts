/**
 * Building blocks for storage adapters of servers that can check-and-write a batch in one round
 * trip (Redis with Lua, PostgreSQL with one statement): a group-commit queue that keeps commits of
 * one subject in order, batches commits of different subjects, and applies updaters by
 * compare-and-set with jittered retries up to a deadline; a queue that batches units of work; the
 * shell every adapter repeats (shared queues, the guard of each operation, close); and the reading
 * of stored JSON texts into snapshots (`raw`, `invalid`). `@substate/storage-redis` and
 * `@substate/storage-postgres` are built on it.
 *
 * @example
 * import { CommitQueue } from '@substate/core/storage-kit'
 * const queue = new CommitQueue({
 *   storage: 'storage-mydb',
 *   execute: (entries) => runBatch(entries), // one round trip; one outcome per entry
 *   retryable: () => false,
 *   fail: (error, subject) => toStorageError(error, subject),
 *   maxBatch: 64,
 *   concurrency: 4,
 * })
 * @module
 */

export {
  type AdapterOptions,
  AdapterShell,
  adapterDefaults,
  type ShellConfig,
} from './adapter-shell.js'
export type {
  BatchEntry,
  BatchField,
  CommitBackend,
  CommitRetryPolicy,
  CompareAndSetOptions,
  EntryOutcome,
  Raw,
} from './commit-queue.js'
export { CommitQueue, retryPolicy } from './commit-queue.js'
export { InFlight } from './in-flight.js'
export { literalPrefix } from './literal-prefix.js'
export {
  losesPrecision,
  objectMembers,
  parseRaw,
  SnapshotBuilder,
  type TextComparison,
} from './stored-values.js'
export { tupleKey, type UnitBackend, UnitQueue } from './unit-queue.js'
