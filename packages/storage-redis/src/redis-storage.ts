import {
  compileGlob,
  type OutboxStore,
  type SubjectStorage,
  type UnitCommit,
  type UnitCommitResult,
} from '@substate/core'
import {
  type AdapterOptions,
  AdapterShell,
  adapterDefaults,
  literalPrefix,
  parseRaw,
  tupleKey,
} from '@substate/core/storage-kit'
import type { Redis } from 'ioredis'
import { execute, executeUnits, snapshot } from './batches.js'
import { bounded, call, field, NAME, watch, wrap } from './connection.js'
import { claimScript, flushScript, removeScript, run } from './scripts.js'

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

/** Commits per EVALSHA: large enough to amortize a round trip, small enough not to stall Redis. */
const MAX_BATCH = 64
const CONCURRENCY = 4

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
