import {
  compileGlob,
  type OutboxStore,
  type PropertyKind,
  type SubjectSnapshot,
  type SubjectStorage,
  type UnitCommit,
  type UnitCommitResult,
} from '@substate/core'
import {
  type AdapterOptions,
  AdapterShell,
  adapterDefaults,
  type BatchEntry,
  type EntryOutcome,
  literalPrefix,
  parseRaw,
  type Raw,
  SnapshotBuilder,
  tupleKey,
} from '@substate/core/storage-kit'
import type { Redis } from 'ioredis'
import { bounded, call, watch, wrap } from './connection.js'
import {
  claimScript,
  commitScript,
  flushScript,
  removeScript,
  run,
  setsScript,
  unitsScript,
} from './scripts.js'

/** Options of {@link createRedisStorage}. */
export interface RedisStorageOptions extends AdapterOptions {
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
}

const NAME = 'storage-redis'
/** Commits per EVALSHA: large enough to amortize a round trip, small enough not to stall Redis. */
const MAX_BATCH = 64
const CONCURRENCY = 4

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
 * with a `ConflictError` once `conflictTimeout` passed. Commits of one subject through one client run one
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
export function createRedisStorage(options: RedisStorageOptions): SubjectStorage {
  const { client, prefix = '' } = options
  const { timeout, idempotencyTtl, policy } = adapterDefaults(options)
  if (typeof client?.evalsha !== 'function')
    throw new TypeError('createRedisStorage needs { client }: an ioredis client (new Redis(url))')
  // Listen for connection errors now, not at the first call: ioredis logs "Unhandled error
  // event" for each one a client without an 'error' listener gets.
  watch(client)
  const hashKey = (subject: string): string => `s:${prefix}${subject}`
  const idempotencyKey = (subject: string, key: string): string =>
    `i:${prefix}${tupleKey(subject, key)}`
  const outboxKeys = ['lease', 'body', 'owner'].map((part) => `o:${tupleKey(prefix, part)}`)
  const unitKey = (key: string): string => `u:${tupleKey(prefix, key)}`

  const shell = new AdapterShell({
    name: NAME,
    connection: client,
    settings: tupleKey(prefix, String(timeout), String(idempotencyTtl)),
    policy,
    commits: () => ({
      storage: NAME,
      maxBatch: MAX_BATCH,
      concurrency: CONCURRENCY,
      execute: (batch) =>
        bounded(client, timeout, 'redis commit', () =>
          execute(client, batch, hashKey, idempotencyKey, idempotencyTtl),
        ),
      retryable: () => false,
      fail: (e, subject) => wrap(e, client, NAME, 'commit', subject),
    }),
    units: () => ({
      storage: NAME,
      maxBatch: MAX_BATCH,
      concurrency: CONCURRENCY,
      execute: (batch) =>
        bounded(client, timeout, 'redis commitUnit', () =>
          executeUnits(client, batch, hashKey, unitKey, outboxKeys, idempotencyTtl),
        ),
      retryable: () => false,
      fail: (e) => wrap(e, client, NAME, 'commitUnit', undefined),
    }),
    run: (operation, subject, fn) => call(client, NAME, timeout, operation, subject, fn),
  })
  const op = shell.op.bind(shell)

  const outbox: OutboxStore = {
    async claim(owner, limit, lease) {
      const flat = (await op('claim', undefined, () =>
        run(client, claimScript, outboxKeys, [limit, lease, owner]),
      )) as string[]
      const out: { id: string; body: string }[] = []
      for (let i = 0; i + 1 < flat.length; i += 2) out.push({ id: flat[i]!, body: flat[i + 1]! })
      return out
    },
    async remove(ids) {
      if (ids.length === 0) return
      await op('remove', undefined, () => run(client, removeScript, outboxKeys, ids))
    },
    size() {
      return op('size', undefined, () => client.hlen(outboxKeys[1]!))
    },
  }

  return {
    name: NAME,
    capabilities: { persistent: true, atomic: true, idempotent: true },

    outbox,

    load(subject) {
      return op('load', subject, async () => {
        const all = await client.hgetall(hashKey(subject))
        return snapshot(Object.entries(all))
      })
    },

    commitUnit(unit: UnitCommit): Promise<UnitCommitResult> {
      return shell.commitUnit(unit)
    },

    commit(subject, changes, options) {
      return shell.commit(subject, changes, options)
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
        shell.forget(subject)
        const pairs: [string, string][] = []
        for (let i = 0; i + 1 < flat.length; i += 2) pairs.push([flat[i]!, flat[i + 1]!])
        return snapshot(pairs)
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

    close() {
      return shell.close()
    },
  }
}

/**
 * A subject as stored, from its hash fields. Fields of other shapes are not ours (KRules only
 * writes p/e): left alone. A value that is not JSON is reported in `invalid`, not thrown.
 */
function snapshot(fields: Iterable<[string, string]>): SubjectSnapshot {
  const b = new SnapshotBuilder('exact')
  for (const [f, raw] of fields) {
    const kind = f[0] === 'p' ? 'prop' : f[0] === 'e' ? 'ext' : undefined
    if (kind) b.add(kind, f.slice(1), raw)
  }
  return b.build()
}

/** Applies units with the units script, in one `EVALSHA`. */
async function executeUnits(
  client: Redis,
  batch: readonly UnitCommit[],
  hashKey: (subject: string) => string,
  unitKey: (key: string) => string,
  outboxKeys: readonly string[],
  ttl: number,
): Promise<UnitCommitResult[]> {
  const keys = [...outboxKeys]
  const args: (string | number)[] = [ttl, batch.length]
  for (const u of batch) {
    const idem = u.key === undefined ? 0 : keys.push(unitKey(u.key))
    args.push(idem, u.entries.length, u.outbox?.length ?? 0, u.lease ?? 30_000, u.owner ?? '')
    for (const e of u.entries) {
      let cflags = ''
      const expected: string[] = []
      for (const c of e.checks) {
        if (c.expect === null) cflags += 'a'
        else {
          cflags += 'v'
          expected.push(c.expect)
        }
      }
      let wflags = ''
      const values: string[] = []
      for (const w of e.writes) {
        if (w.value === null) wflags += 'd'
        else {
          wflags += 's'
          values.push(w.value)
        }
      }
      const names = e.names ?? []
      args.push(keys.push(hashKey(e.subject)), e.checks.length, cflags, names.length)
      args.push(e.writes.length, wflags)
      for (const c of e.checks) args.push(field(c.kind, c.name))
      for (const v of expected) args.push(v)
      for (const n of names) {
        const fields = [...new Set(n.names)].map((name) => field(n.kind, name))
        args.push(n.kind === 'prop' ? 'p' : 'e', fields.length, ...fields)
      }
      for (const w of e.writes) args.push(field(w.kind, w.name))
      for (const v of values) args.push(v)
    }
    for (const m of u.outbox ?? []) args.push(m.id, m.body)
  }
  const reply = (await run(client, unitsScript, keys, args)) as (number | string[])[][]
  return batch.map((u, i): UnitCommitResult => {
    const r = reply[i]!
    const status = r[0] as number
    if (status === 1) return { status: 'applied' }
    if (status === 2) return { status: 'duplicate' }
    const stale: Record<string, SubjectSnapshot> = {}
    for (let j = 1; j + 1 < r.length; j += 2) {
      const flat = r[j + 1] as string[]
      const pairs: [string, string][] = []
      for (let k = 0; k + 1 < flat.length; k += 2) pairs.push([flat[k]!, flat[k + 1]!])
      Object.defineProperty(stale, u.entries[r[j] as number]!.subject, {
        value: snapshot(pairs),
        enumerable: true,
      })
    }
    return { status: 'conflict', stale }
  })
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
