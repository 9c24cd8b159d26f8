/*
 * Group commit of units of work, shared by the Redis and PostgreSQL adapters: units committed at
 * the same time go to the backend together (one EVALSHA, one statement), each still all or
 * nothing, applied in the order they were queued. No latency is added when idle; under load the
 * number of round trips drops by the batch size.
 */
import { StorageError } from '../errors.js'
import type { UnitCommit, UnitCommitResult } from '../storage.js'

/** How a {@link UnitQueue} reaches its backend. */
export interface UnitBackend {
  /** Adapter name, for errors. */
  readonly storage: string
  /**
   * Applies units in one round trip, in order, each all or nothing (a later unit sees what an
   * earlier one wrote); one result per unit, or an `Error` for a unit that alone is invalid.
   */
  execute(units: readonly UnitCommit[]): Promise<readonly (UnitCommitResult | Error)[]>
  /** Whether a failure of a whole batch is transient (a deadlock): its units are sent again. */
  retryable(error: unknown): boolean
  /** Turns a failure of a whole batch into the error each of its units rejects with. */
  fail(error: unknown): Error
  /** Most units per round trip. */
  readonly maxBatch: number
  /** Most round trips in flight at once. */
  readonly concurrency: number
  /** Times a batch failing with a retryable error is sent again. @default 10 */
  readonly maxRetries?: number
}

interface Queued {
  readonly unit: UnitCommit
  readonly resolve: (r: UnitCommitResult) => void
  readonly reject: (e: unknown) => void
  readonly onSettled: (() => void) | undefined
  retries: number
}

/** Batches concurrent {@link UnitCommit}s into shared round trips. */
export class UnitQueue {
  readonly #backend: UnitBackend
  readonly #waiting: Queued[] = []
  #inFlight = 0
  #scheduled = false

  constructor(backend: UnitBackend) {
    this.#backend = backend
  }

  /**
   * Queues a unit; resolves with what became of it. `onSettled` is called just before the returned
   * promise settles (an adapter counting its operations in flight needs no promise of its own).
   */
  commit(unit: UnitCommit, onSettled?: () => void): Promise<UnitCommitResult> {
    return new Promise((resolve, reject) => {
      this.#waiting.push({ unit, resolve, reject, onSettled, retries: 0 })
      this.#schedule()
    })
  }

  #schedule(): void {
    if (this.#scheduled) return
    this.#scheduled = true
    // A microtask, not a synchronous send: units committed in the same tick share a round trip.
    queueMicrotask(() => {
      this.#scheduled = false
      this.#pump()
    })
  }

  #pump(): void {
    while (this.#inFlight < this.#backend.concurrency && this.#waiting.length > 0) {
      const batch = this.#waiting.splice(0, this.#backend.maxBatch)
      this.#inFlight++
      this.#run(batch).then(this.#ran, this.#ran)
    }
  }

  readonly #ran = (): void => {
    this.#inFlight--
    this.#pump()
  }

  #run(batch: Queued[]): Promise<void> {
    let sent: Promise<readonly (UnitCommitResult | Error)[]>
    try {
      sent = this.#backend.execute(batch.map((q) => q.unit))
    } catch (e) {
      sent = Promise.reject(e)
    }
    return sent.then(
      (results) => {
        for (let i = 0; i < batch.length; i++) {
          const q = batch[i]!
          const r = results[i]
          q.onSettled?.()
          if (r === undefined)
            q.reject(
              new StorageError(
                this.#backend.storage,
                'commitUnit',
                q.unit.entries[0]?.subject,
                `the backend returned ${results.length} results for ${batch.length} units`,
              ),
            )
          else if (r instanceof Error) q.reject(r)
          else q.resolve(r)
        }
      },
      (e: unknown) => {
        const again: Queued[] = []
        for (const q of batch) {
          if (this.#backend.retryable(e) && q.retries++ < (this.#backend.maxRetries ?? 10))
            again.push(q)
          else {
            q.onSettled?.()
            q.reject(this.#backend.fail(e))
          }
        }
        if (again.length > 0) {
          // Back in front, in their order, after a short jittered pause (a deadlock's other side).
          setTimeout(
            () => {
              this.#waiting.unshift(...again)
              this.#schedule()
            },
            Math.random() * 5 * again[0]!.retries,
          )
        }
      },
    )
  }
}

/**
 * Encodes a tuple of strings as one string, unambiguously (no two tuples give the same text):
 * for keys built from several parts (a subject and an idempotency key, a prefix and a unit key).
 */
export const tupleKey = (...parts: readonly string[]): string => JSON.stringify(parts)
