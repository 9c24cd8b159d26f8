import {
  type Change,
  type CommitOptions,
  type CommitResult,
  compileGlob,
  type JsonValue,
  type PropertyKind,
  StorageError,
  type SubjectSnapshot,
  type SubjectStorage,
} from '@substate/core'
import {
  type BatchEntry,
  type CommitBackend,
  CommitQueue,
  type CompareAndSetOptions,
  type EntryOutcome,
  InFlight,
  literalPrefix,
  parseRaw,
  type Raw,
} from '@substate/core/storage-kit'
import type { Redis } from 'ioredis'
import { bounded, call, wrap } from './connection.js'
import { commitScript, flushScript, run, setsScript } from './scripts.js'

/** Options of {@link createRedisStorage}. */
export interface RedisStorageOptions extends CompareAndSetOptions {
  /**
   * The ioredis client. The storage sends commands on it (never WATCH/MULTI, so it can be shared)
   * and never closes it. A standalone server is required: a Cluster client is not supported.
   */
  readonly client: Redis
  /**
   * Prepended to subject names in keys: a subject lives at `s:{prefix}{name}`, as in KRules.
   * Storages with different prefixes on one server are isolated from each other.
   * @default ''
   */
  readonly prefix?: string
  /**
   * Longest time one operation may take, waiting for the connection included, in milliseconds;
   * past it, the operation rejects with a `StorageError` whose cause is a `TimeoutError`.
   * @default 5000
   */
  readonly timeout?: number
  /**
   * How long an idempotency key is remembered after its commit, in seconds.
   * @default 86_400
   */
  readonly idempotencyTtl?: number
}

const NAME = 'storage-redis'
/** Commits per EVALSHA: large enough to amortize a round trip, small enough not to stall Redis. */
const MAX_BATCH = 64
const CONCURRENCY = 4

/** Commit queues shared by the storages of one client with the same prefix and settings. */
const queues = new WeakMap<Redis, Map<string, CommitQueue>>()

/** `s:{prefix}{name}` fields: `p{prop}` for properties, `e{prop}` for ext properties (KRules). */
const field = (kind: PropertyKind, name: string): string => (kind === 'prop' ? 'p' : 'e') + name

/** Escapes a literal for a Redis MATCH pattern. */
const escapeMatch = (s: string): string => s.replace(/[*?[\]\\]/g, '\\$&')

/**
 * A storage keeping subjects in Redis, in the KRules 3.x layout, so a Python KRules service can
 * share them: one hash per subject at `s:{prefix}{name}`, with fields `p{prop}` and `e{prop}`
 * holding JSON text.
 *
 * Every change set is applied by one Lua script, atomically. Updaters run in this process and are
 * applied by compare-and-set on the stored values: a change set whose values changed in between
 * is re-run on the new values (the first time at once, then with a jittered backoff) and rejects
 * with a `ConflictError` after `maxAttempts`. Commits of one subject through one client run one
 * at a time; commits of different subjects issued together share one EVALSHA. Idempotency keys
 * are kept at `i:{prefix}["{name}","{key}"]` for `idempotencyTtl` seconds.
 *
 * Every operation either settles within `timeout` or rejects with a `StorageError` naming the
 * server; while the server is known to be down, operations fail at once instead of queueing.
 *
 * @example
 * import { Redis } from 'ioredis'
 * import { createContainer } from '@substate/core'
 * import { createRedisStorage } from '@substate/storage-redis'
 *
 * const client = new Redis('redis://127.0.0.1:6379')
 * const container = createContainer({ storage: createRedisStorage({ client, prefix: 'app:' }) })
 */
export function createRedisStorage({
  client,
  prefix = '',
  timeout = 5000,
  maxAttempts = 20,
  retryDelay = 2,
  idempotencyTtl = 86_400,
}: RedisStorageOptions): SubjectStorage {
  if (typeof client?.evalsha !== 'function')
    throw new TypeError('createRedisStorage needs { client }: an ioredis client (new Redis(url))')
  const hashKey = (subject: string): string => `s:${prefix}${subject}`
  const idempotencyKey = (subject: string, key: string): string =>
    `i:${prefix}${JSON.stringify([subject, key])}`
  const policy = { maxAttempts, retryDelay }
  const queue = sharedQueue(client, `${prefix}\u0000${timeout}\u0000${idempotencyTtl}`, () => ({
    storage: NAME,
    maxBatch: MAX_BATCH,
    concurrency: CONCURRENCY,
    execute: (batch) =>
      bounded(client, timeout, 'redis commit', () =>
        execute(client, batch, hashKey, idempotencyKey, idempotencyTtl),
      ),
    retryable: () => false,
    fail: (e, subject) => wrap(e, client, NAME, 'commit', subject),
  }))

  let closed = false
  /** This storage's operations in flight, which close() waits for. */
  const inFlight = new InFlight()
  const track = <T>(p: Promise<T>): Promise<T> => inFlight.track(p)
  const op = <T>(operation: string, subject: string | undefined, fn: () => Promise<T>) => {
    if (closed)
      return Promise.reject(new StorageError(NAME, operation, subject, 'the storage is closed'))
    return track(call(client, NAME, timeout, operation, subject, fn))
  }

  const snapshot = (subject: string, fields: Iterable<[string, string]>): SubjectSnapshot => {
    const props: [string, JsonValue][] = []
    const ext: [string, JsonValue][] = []
    for (const [f, raw] of fields) {
      // Fields of other shapes are not ours (KRules only writes p/e): leave them alone.
      const target = f[0] === 'p' ? props : f[0] === 'e' ? ext : undefined
      target?.push([f.slice(1), parseRaw(raw, NAME, subject, f.slice(1))!])
    }
    // fromEntries, not assignment: a property may be named `__proto__`.
    return { props: Object.fromEntries(props), ext: Object.fromEntries(ext) }
  }

  return {
    name: NAME,
    capabilities: { persistent: true, atomic: true, idempotent: true },

    load(subject) {
      return op('load', subject, async () => {
        const all = await client.hgetall(hashKey(subject))
        return snapshot(subject, Object.entries(all))
      })
    },

    commit(subject, changes: readonly Change[], options?: CommitOptions): Promise<CommitResult> {
      if (closed)
        return Promise.reject(new StorageError(NAME, 'commit', subject, 'the storage is closed'))
      const key = options?.idempotencyKey
      if (changes.length === 0 && key === undefined) return Promise.resolve({ changes: [] })
      inFlight.start()
      return queue.commit(subject, changes, key, policy, options?.oldValues !== false, inFlight.end)
    },

    get(subject, kind, name) {
      return op('get', subject, async () => {
        const raw = await client.hget(hashKey(subject), field(kind, name))
        return raw === null ? undefined : { value: parseRaw(raw, NAME, subject, name)! }
      })
    },

    flush(subject) {
      return op('flush', subject, async () => {
        const flat = (await run(client, flushScript, [hashKey(subject)], [])) as string[]
        queue.forget(subject)
        const pairs: [string, string][] = []
        for (let i = 0; i + 1 < flat.length; i += 2) pairs.push([flat[i]!, flat[i + 1]!])
        return snapshot(subject, pairs)
      })
    },

    async *subjects(pattern) {
      const match = pattern === undefined ? () => true : compileGlob(pattern)
      const start = `s:${prefix}`
      const glob = `${escapeMatch(start + literalPrefix(pattern ?? ''))}*`
      const seen = new Set<string>()
      let cursor = '0'
      do {
        const [next, keys] = await op('subjects', undefined, () =>
          client.scan(cursor, 'MATCH', glob, 'COUNT', 1000),
        )
        cursor = next
        for (const k of keys) {
          const name = k.slice(start.length)
          // SCAN may return a key twice; a glob decides the rest.
          if (!seen.has(name) && match(name)) {
            seen.add(name)
            yield name
          }
        }
      } while (cursor !== '0')
    },

    async close() {
      closed = true
      await inFlight.idle()
    },
  }
}

function sharedQueue(client: Redis, key: string, backend: () => CommitBackend): CommitQueue {
  let byKey = queues.get(client)
  if (!byKey) {
    byKey = new Map()
    queues.set(client, byKey)
  }
  let queue = byKey.get(key)
  if (!queue) {
    queue = new CommitQueue(backend())
    byKey.set(key, queue)
  }
  return queue
}

/**
 * Whether an entry is only blind sets: the sets script applies it with one `HSET` (atomic),
 * cheaper than the commit script, which reads, checks and reports.
 */
/** An error Redis answered with for one key (named so `wrap` adds no "is Redis running" hint). */
class ReplyError extends Error {
  override name = 'ReplyError'
}

const plainSet = (e: BatchEntry): boolean =>
  !e.probe &&
  !e.oldValues &&
  e.idempotencyKey === undefined &&
  e.fields.length > 0 &&
  e.fields.every((f) => f.expect === undefined && f.write !== null)

async function execute(
  client: Redis,
  batch: readonly BatchEntry[],
  hashKey: (subject: string) => string,
  idempotencyKey: (subject: string, key: string) => string,
  ttl: number,
): Promise<EntryOutcome[]> {
  const outcomes: EntryOutcome[] = new Array(batch.length)
  const plain: number[] = []
  const scripted: number[] = []
  for (let i = 0; i < batch.length; i++) (plainSet(batch[i]!) ? plain : scripted).push(i)
  const fail = (i: number, e: unknown): EntryOutcome => ({
    status: 'failed',
    error: wrap(e, client, NAME, 'commit', batch[i]!.subject),
  })
  // Both go out at once; an error of one part fails only its entries (the other may be written).
  const parts = await Promise.allSettled([
    plain.length === 0
      ? undefined
      : hsets(
          client,
          plain.map((i) => batch[i]!),
          hashKey,
        ),
    scripted.length === 0
      ? undefined
      : script(
          client,
          scripted.map((i) => batch[i]!),
          hashKey,
          idempotencyKey,
          ttl,
        ),
  ])
  const [hset, lua] = parts
  // Nothing was written: the batch failed as a whole.
  if (hset.status === 'rejected' && (scripted.length === 0 || lua.status === 'rejected'))
    throw hset.reason
  if (lua.status === 'rejected' && plain.length === 0) throw lua.reason
  plain.forEach((i, j) => {
    const error = hset.status === 'rejected' ? hset.reason : hset.value![j]
    outcomes[i] = error
      ? fail(i, typeof error === 'string' ? new ReplyError(error) : error)
      : { status: 'applied', old: batch[i]!.fields.map(() => null) }
  })
  scripted.forEach((i, j) => {
    outcomes[i] = lua.status === 'rejected' ? fail(i, lua.reason) : lua.value![j]!
  })
  return outcomes
}

/**
 * Writes blind-set entries with the sets script, in one `EVALSHA`; per entry, `null` or the error
 * Redis raised for it.
 */
async function hsets(
  client: Redis,
  entries: readonly BatchEntry[],
  hashKey: (subject: string) => string,
): Promise<(string | null)[]> {
  const keys: string[] = []
  const args: (string | number)[] = []
  for (const e of entries) {
    keys.push(hashKey(e.subject))
    args.push(e.fields.length)
    for (const f of e.fields) args.push(field(f.kind, f.name), f.write!)
  }
  const reply = (await run(client, setsScript, keys, args)) as (number | string)[]
  return reply.map((r) => (r === 1 ? null : String(r)))
}

/** Applies entries with the commit script, in one `EVALSHA`. */
async function script(
  client: Redis,
  batch: readonly BatchEntry[],
  hashKey: (subject: string) => string,
  idempotencyKey: (subject: string, key: string) => string,
  ttl: number,
): Promise<EntryOutcome[]> {
  const keys = batch.map((e) => hashKey(e.subject))
  const args: (string | number)[] = [ttl, batch.length]
  for (const e of batch) {
    const idem =
      e.idempotencyKey === undefined ? 0 : keys.push(idempotencyKey(e.subject, e.idempotencyKey))
    let flags = ''
    const values: string[] = []
    const expected: string[] = []
    args.push(e.fields.length, idem, '')
    const flagsAt = args.length - 1
    for (const f of e.fields) {
      args.push(field(f.kind, f.name))
      if (e.probe) flags += 'r'
      else {
        if (f.write !== null) values.push(f.write)
        if (f.expect === undefined)
          // Written blind (not read) when the caller does not need the old value.
          flags += e.oldValues ? (f.write === null ? 'd' : 's') : f.write === null ? 'x' : 'w'
        else if (f.expect === null) flags += f.write === null ? 'E' : 'A'
        else {
          flags += f.write === null ? 'D' : 'S'
          expected.push(f.expect)
        }
      }
    }
    args[flagsAt] = flags
    for (const v of values) args.push(v)
    for (const v of expected) args.push(v)
  }
  const reply = (await run(client, commitScript, keys, args)) as (number | Raw)[]
  let at = 0
  return batch.map((e): EntryOutcome => {
    const status = reply[at] as number
    const values = reply.slice(at + 1, at + 1 + e.fields.length) as Raw[]
    at += 1 + e.fields.length
    if (status === 1) return { status: 'applied', old: values }
    if (status === 2) return { status: 'duplicate' }
    return { status: 'conflict', current: values }
  })
}
