/*
 * Group commit with compare-and-set, shared by the Redis and PostgreSQL adapters (and any adapter
 * of a server that can check-and-write a batch in one round trip): the backend-specific part is
 * the `execute` function each adapter passes in.
 *
 * - Commits of one subject run one at a time, in call order (so writers sharing a client never
 *   race each other; only other processes can make a compare-and-set fail).
 * - Commits of different subjects that are ready at the same time go to the backend as one batch
 *   (one EVALSHA, one SQL statement): no latency is added when idle, and under load the number of
 *   round trips drops by the batch size.
 * - Updaters are computed in JavaScript against the value last seen in storage (kept in a small
 *   cache, so a commit usually needs a single round trip), and written only if the stored value is
 *   still that value. A failed check returns the current values; the updater is re-run on them,
 *   immediately the first time, then after an exponential backoff with full jitter, until
 *   `conflictTimeout` has passed since the commit was first sent (or `maxAttempts` were made).
 */
import { ConflictError, StorageError } from '../errors.js'
import type { JsonValue } from '../json.js'
import type { Change, CommitResult, CommittedChange, PropertyKind } from '../storage.js'
import { parseRaw } from './stored-values.js'

/** Options every adapter built on {@link CommitQueue} takes for its compare-and-set retries. */
export interface CompareAndSetOptions {
  /**
   * How long a change set with updaters keeps retrying its compare-and-set, in milliseconds,
   * while other processes keep changing the same properties, before it rejects with a
   * `ConflictError`. Ordinary contention (a few steady writers on one property) never lasts that
   * long: the retries back off with full jitter, so the writers spread out.
   * @default 30_000
   */
  readonly conflictTimeout?: number
  /**
   * Most compare-and-set attempts of one change set, as well as the deadline; unbounded by
   * default (the deadline decides).
   * @default Infinity
   */
  readonly maxAttempts?: number
  /**
   * Base of the jittered exponential backoff between compare-and-set attempts, in milliseconds
   * (the first retry is immediate; the delay is capped at 250 ms).
   * @default 2
   */
  readonly retryDelay?: number
}

/** A stored value as the backend holds it: its JSON text, or `null` when absent. */
export type Raw = string | null

/** One property of a {@link BatchEntry}, in the order of the commit's changes. */
export interface BatchField {
  readonly kind: PropertyKind
  readonly name: string
  /** JSON text to write, or `null` to delete. Ignored in a probe. */
  readonly write: Raw
  /** Compare-and-set: the value `write` was computed from; `undefined` when not checked. */
  readonly expect: Raw | undefined
}

/** One commit as the backend applies it. A batch holds at most one entry per subject. */
export interface BatchEntry {
  readonly subject: string
  readonly fields: readonly BatchField[]
  /** Write nothing: only report the current values (the commit needs them to run its updaters). */
  readonly probe: boolean
  readonly idempotencyKey: string | undefined
  /**
   * Whether the old values of the unchecked fields (sets and deletes: `expect` undefined) are
   * needed. When `false` the backend may write them blind and report `null` as their old value.
   */
  readonly oldValues: boolean
}

/** What became of one {@link BatchEntry}. */
export type EntryOutcome =
  /** Written; `old[i]` is the value `fields[i]` replaced (`null` for a field written blind). */
  | { readonly status: 'applied'; readonly old: readonly Raw[] }
  /**
   * Not written (a check failed, or a probe); `current` holds the values now stored, if known
   * (those of fields that may be written blind are not known).
   */
  | { readonly status: 'conflict'; readonly current: readonly Raw[] | undefined }
  /** Not written: the idempotency key was already applied. */
  | { readonly status: 'duplicate' }
  /** Not written: this entry alone is invalid for the backend. */
  | { readonly status: 'failed'; readonly error: Error }

/** How a {@link CommitQueue} reaches its backend. */
export interface CommitBackend {
  /** Adapter name, for errors. */
  readonly storage: string
  /** Applies a batch in one round trip, all-or-nothing per entry; one outcome per entry. */
  execute(batch: readonly BatchEntry[]): Promise<readonly EntryOutcome[]>
  /** Whether a failure of a whole batch is transient (a deadlock): its commits are retried. */
  retryable(error: unknown): boolean
  /** Turns a failure of a whole batch into the error each of its commits rejects with. */
  fail(error: unknown, subject: string): Error
  /** Most entries per batch. */
  readonly maxBatch: number
  /** Most batches in flight at once. */
  readonly concurrency: number
}

/** Per-commit retry settings. */
export interface CommitRetryPolicy {
  readonly maxAttempts: number
  readonly retryDelay: number
  /** Milliseconds after the first attempt past which a lost race is a `ConflictError`. */
  readonly conflictTimeout?: number
}

/** The compare-and-set policy of `options`, with the defaults filled in. */
export function retryPolicy(options: CompareAndSetOptions): CommitRetryPolicy {
  return {
    maxAttempts: options.maxAttempts ?? Number.POSITIVE_INFINITY,
    retryDelay: options.retryDelay ?? 2,
    conflictTimeout: options.conflictTimeout ?? 30_000,
  }
}

interface Pending {
  readonly subject: string
  readonly changes: readonly Change[]
  readonly key: string | undefined
  readonly policy: CommitRetryPolicy
  /** Whether the exact old values of sets and deletes are needed (else they may be written blind). */
  readonly oldValues: boolean
  /** Failed compare-and-set attempts made against values just read from storage. */
  attempts: number
  /** When the first compare-and-set failed (ms, `Date.now()`); 0 before. */
  since: number
  /** Whether the cached values of this subject were read by this commit's last round trip. */
  fresh: boolean
  readonly resolve: (r: CommitResult) => void
  readonly reject: (e: unknown) => void
  readonly onSettled: (() => void) | undefined
}

interface Prepared {
  readonly pending: Pending
  readonly entry: BatchEntry
  /** The values written, as JavaScript values (sets and updaters), for the result. */
  readonly values: readonly (JsonValue | undefined)[]
}

/** Subjects whose last-seen values are remembered (oldest forgotten first). */
const CACHED_SUBJECTS = 10_000

const fieldKey = (kind: PropertyKind, name: string): string => (kind === 'prop' ? 'p' : 'e') + name

/** Serializes commits per subject, batches them across subjects, and retries lost races. */
export class CommitQueue {
  readonly #backend: CommitBackend
  /** Per subject, its commits in call order; the head is being applied (or waits to be). */
  readonly #queues = new Map<string, Pending[]>()
  /** Subjects whose head commit can be sent now, in the order they became ready. */
  readonly #ready = new Set<string>()
  /** Per subject, the raw values last seen in storage, by field key. */
  readonly #seen = new Map<string, Map<string, Raw>>()
  #inFlight = 0
  #scheduled = false

  constructor(backend: CommitBackend) {
    this.#backend = backend
  }

  /**
   * Queues a commit; resolves with its result once applied. With `oldValues` false, the `oldValue`
   * of `set` and `delete` changes may be `undefined` (they may be written without a read).
   * `onSettled` is called just before the returned promise settles (an adapter counting its
   * commits in flight needs no promise of its own per commit).
   */
  commit(
    subject: string,
    changes: readonly Change[],
    key: string | undefined,
    policy: CommitRetryPolicy,
    oldValues = true,
    onSettled?: () => void,
  ): Promise<CommitResult> {
    return new Promise((resolve, reject) => {
      const p: Pending = {
        subject,
        changes,
        key,
        policy,
        oldValues,
        attempts: 0,
        since: 0,
        fresh: false,
        resolve,
        reject,
        onSettled,
      }
      const queue = this.#queues.get(subject)
      if (queue) queue.push(p)
      else {
        this.#queues.set(subject, [p])
        this.#markReady(subject)
      }
    })
  }

  /** Forgets what was seen of a subject (after it was flushed). */
  forget(subject: string): void {
    this.#seen.delete(subject)
  }

  #markReady(subject: string): void {
    this.#ready.add(subject)
    if (this.#scheduled) return
    this.#scheduled = true
    // A microtask, not a synchronous send: commits issued in the same tick share one batch.
    queueMicrotask(() => {
      this.#scheduled = false
      this.#pump()
    })
  }

  #pump(): void {
    while (this.#inFlight < this.#backend.concurrency && this.#ready.size > 0) {
      const batch: Prepared[] = []
      for (const subject of this.#ready) {
        this.#ready.delete(subject)
        const prepared = this.#prepare(this.#queues.get(subject)![0]!)
        if (prepared) batch.push(prepared)
        if (batch.length >= this.#backend.maxBatch) break
      }
      if (batch.length === 0) continue
      this.#inFlight++
      this.#run(batch).then(this.#ran, this.#ran)
    }
  }

  /** Computes a commit's writes, or a probe when its updaters need values not seen yet. */
  #prepare(p: Pending): Prepared | undefined {
    const seen = this.#seen.get(p.subject)
    const fields: BatchField[] = []
    const values: (JsonValue | undefined)[] = []
    let probe = false
    try {
      for (const c of p.changes) {
        if (c.op === 'set') {
          fields.push({
            kind: c.kind,
            name: c.name,
            write: JSON.stringify(c.value),
            expect: undefined,
          })
          values.push(c.value)
        } else if (c.op === 'delete') {
          fields.push({ kind: c.kind, name: c.name, write: null, expect: undefined })
          values.push(undefined)
        } else {
          const k = fieldKey(c.kind, c.name)
          if (!seen?.has(k)) {
            probe = true
            break
          }
          const current = seen.get(k)!
          let next: JsonValue
          try {
            next = c.update(current === null ? undefined : (JSON.parse(current) as JsonValue))
          } catch (e) {
            // Thrown on a value remembered from earlier: it may be stale, so read it, then decide.
            if (!p.fresh) {
              probe = true
              break
            }
            throw e
          }
          if (next === undefined)
            throw new TypeError(`the updater of ${c.name} returned undefined (return a JSON value)`)
          fields.push({ kind: c.kind, name: c.name, write: JSON.stringify(next), expect: current })
          values.push(next)
        }
      }
    } catch (e) {
      this.#reject(p, e)
      return undefined
    }
    if (probe) {
      const reads = p.changes.map((c) => ({
        kind: c.kind,
        name: c.name,
        write: null,
        expect: undefined,
      }))
      return {
        pending: p,
        entry: {
          subject: p.subject,
          fields: reads,
          probe: true,
          idempotencyKey: p.key,
          oldValues: true,
        },
        values: [],
      }
    }
    return {
      pending: p,
      entry: {
        subject: p.subject,
        fields,
        probe: false,
        idempotencyKey: p.key,
        oldValues: p.oldValues,
      },
      values,
    }
  }

  readonly #ran = (): void => {
    this.#inFlight--
    this.#pump()
  }

  /** Sends a batch and applies its outcomes. (Callbacks, not async/await: fewer promises.) */
  #run(batch: readonly Prepared[]): Promise<void> {
    let sent: Promise<readonly EntryOutcome[]>
    try {
      sent = this.#backend.execute(batch.map((b) => b.entry))
    } catch (e) {
      sent = Promise.reject(e)
    }
    return sent.then(
      (outcomes) => {
        for (let i = 0; i < batch.length; i++) {
          const b = batch[i]!
          const outcome = outcomes[i]
          try {
            if (outcome === undefined) {
              throw new StorageError(
                this.#backend.storage,
                'commit',
                b.pending.subject,
                `the backend returned ${outcomes.length} outcomes for a batch of ${batch.length}`,
              )
            }
            this.#apply(b, outcome)
          } catch (e) {
            // Every commit settles, whatever went wrong here (else it, and close(), would hang).
            if (this.#queues.get(b.pending.subject)?.[0] === b.pending) this.#reject(b.pending, e)
          }
        }
      },
      (e: unknown) => {
        const retry = this.#backend.retryable(e)
        for (const { pending: p } of batch) {
          if (p.since === 0) p.since = Date.now()
          const within =
            Date.now() - p.since < (p.policy.conflictTimeout ?? Number.POSITIVE_INFINITY)
          if (retry && ++p.attempts < p.policy.maxAttempts && within) this.#retry(p)
          else this.#reject(p, this.#backend.fail(e, p.subject))
        }
      },
    )
  }

  #apply({ pending: p, entry, values }: Prepared, outcome: EntryOutcome): void {
    switch (outcome.status) {
      case 'applied': {
        let changes: CommittedChange[]
        try {
          changes = p.changes.map((c, i) => ({
            kind: c.kind,
            name: c.name,
            oldValue: parseRaw(outcome.old[i] ?? null, this.#backend.storage, p.subject, c.name),
            // The value the caller passed (a set) or its updater returned: the caller's own.
            newValue: values[i],
          }))
        } catch (e) {
          this.#reject(p, e)
          return
        }
        this.#remember(
          p.subject,
          entry.fields,
          (f) => f.write,
          (f) => f.expect !== undefined,
        )
        this.#resolve(p, { changes })
        return
      }
      case 'duplicate':
        this.#resolve(p, { changes: [], duplicate: true })
        return
      case 'failed':
        this.#reject(p, outcome.error)
        return
      case 'conflict': {
        const { current } = outcome
        const wasCheck = !entry.probe && p.fresh
        if (current) {
          this.#remember(
            p.subject,
            entry.fields,
            // A field that may have been written blind was not read: its value is not known.
            (f, i) =>
              entry.probe || entry.oldValues || f.expect !== undefined
                ? (current[i] ?? null)
                : undefined,
            () => true,
          )
          p.fresh = true
        } else p.fresh = false
        if (wasCheck && p.since === 0) p.since = Date.now()
        if (
          wasCheck &&
          (++p.attempts >= p.policy.maxAttempts ||
            Date.now() - p.since >= (p.policy.conflictTimeout ?? Number.POSITIVE_INFINITY))
        ) {
          const error = new ConflictError(this.#backend.storage, p.subject, p.attempts)
          this.#reject(p, error)
        } else this.#retry(p)
      }
    }
  }

  /**
   * Sends the commit again: at once after its first lost race, then after an exponential backoff
   * with full jitter (a random delay up to a ceiling that doubles, capped at 250 ms).
   */
  #retry(p: Pending): void {
    if (p.attempts <= 1) {
      this.#markReady(p.subject)
      return
    }
    const ceiling = Math.min(p.policy.retryDelay * 2 ** Math.min(p.attempts - 1, 20), 250)
    setTimeout(() => this.#markReady(p.subject), Math.random() * ceiling)
  }

  /** Settles the head commit of its subject and lets the next one of that subject go. */
  #settle(p: Pending): void {
    const queue = this.#queues.get(p.subject)!
    queue.shift()
    if (queue.length > 0) this.#markReady(p.subject)
    else this.#queues.delete(p.subject)
    p.onSettled?.()
  }

  #resolve(p: Pending, result: CommitResult): void {
    this.#settle(p)
    p.resolve(result)
  }

  #reject(p: Pending, error: unknown): void {
    this.#settle(p)
    p.reject(error)
  }

  #remember(
    subject: string,
    fields: readonly BatchField[],
    /** The value to remember; `undefined` when not known (then not remembered). */
    value: (f: BatchField, i: number) => Raw | undefined,
    keep: (f: BatchField) => boolean,
  ): void {
    let seen = this.#seen.get(subject)
    // Remember what updaters read, and refresh what is already remembered; plain sets of fields
    // no updater touched are not kept (store() of many subjects would fill the cache for nothing).
    if (seen === undefined && !fields.some(keep)) return
    if (seen) this.#seen.delete(subject)
    for (let i = 0; i < fields.length; i++) {
      const f = fields[i]!
      const k = fieldKey(f.kind, f.name)
      const v = value(f, i)
      if (v === null && !keep(f)) {
        // Deleted without a check: nothing to remember (timers and the like come and go).
        seen?.delete(k)
      } else if (v !== undefined && (keep(f) || seen?.has(k))) {
        seen ??= new Map()
        seen.set(k, v)
      }
    }
    if (seen !== undefined && seen.size === 0) return
    if (!seen) return
    this.#seen.set(subject, seen)
    if (this.#seen.size > CACHED_SUBJECTS) this.#seen.delete(this.#seen.keys().next().value!)
  }
}
