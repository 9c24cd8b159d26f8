import { createHash } from 'node:crypto'
import {
  compileGlob,
  type OutboxStore,
  StorageError,
  type SubjectSnapshot,
  type SubjectStorage,
  TimeoutError,
  type UnitCommit,
  type UnitCommitResult,
} from '@substate/core'
import {
  type AdapterOptions,
  AdapterShell,
  adapterDefaults,
  type EntryOutcome,
  literalPrefix,
  parseRaw,
} from '@substate/core/storage-kit'
import { execute, executeUnits, nulInUnit, rowSnapshot, storedObject } from './batches.js'
import {
  ALREADY_CREATED,
  address,
  CONCURRENCY,
  MAX_BATCH,
  NAME,
  type PgQueryable,
  type PgQueryConfig,
  poolState,
  RETRYABLE,
  sqlState,
  survive,
  tableOf,
  UNREACHABLE,
} from './connection.js'
import { statements } from './sql.js'

export type { PgQueryable, PgQueryConfig } from './connection.js'

/** Options of {@link createPostgresStorage}. */
export interface PostgresStorageOptions extends AdapterOptions {
  /** The `pg` Pool (or Client). The storage runs queries on it and never ends it. */
  readonly pool: PgQueryable
  /**
   * The table holding subjects (KRules: `subjects`). Storages on different tables are isolated.
   * @default 'subjects'
   */
  readonly table?: string
  /**
   * The schema of the table; it must exist.
   * @default 'public'
   */
  readonly schema?: string
  /**
   * Create the table and its `{table}_applied` side table when missing, on first use. Safe when
   * several processes start at once. Turn off when the role may not create tables (they must
   * then exist).
   * @default true
   */
  readonly createTable?: boolean
}

/**
 * A storage keeping subjects in a PostgreSQL table, KRules' `subjects(subject_name text primary
 * key, properties jsonb, ext_properties jsonb, updated_at timestamp)`, so a Python KRules service
 * can share it. The table is created if missing.
 *
 * Every change set is applied by one SQL statement, atomically. Updaters run in this process and
 * are applied by compare-and-set on the stored values, under a row lock; a subject without a row
 * is created with `INSERT ... ON CONFLICT DO NOTHING`, so two writers creating it cannot both win.
 * A change set whose values changed in between is re-run on the new values (the first time at
 * once, then with a jittered backoff) and rejects with a `ConflictError` once `conflictTimeout` passed.
 * Commits of one subject through one pool run one at a time; commits of different subjects
 * issued together share one statement. Idempotency keys are rows of `{table}_applied`, written by
 * the same statement.
 *
 * Every operation settles within `timeout` or rejects with a `StorageError` naming the server.
 *
 * @example
 * import pg from 'pg'
 * import { createContainer } from '@substate/core'
 * import { createPostgresStorage } from '@substate/storage-postgres'
 *
 * const pool = new pg.Pool({ connectionString: 'postgres://postgres@127.0.0.1:5432/test' })
 * const container = createContainer({ storage: createPostgresStorage({ pool }) })
 */
export function createPostgresStorage(options: PostgresStorageOptions): SubjectStorage {
  const { pool, table = 'subjects', schema = 'public', createTable = true } = options
  const { timeout, idempotencyTtl, policy } = adapterDefaults(options)
  if (typeof pool?.query !== 'function')
    throw new TypeError('createPostgresStorage needs { pool }: a pg Pool (new pg.Pool(config))')
  if (!table || !schema)
    throw new TypeError('createPostgresStorage: table and schema must be names')
  const id = createHash('sha1').update(`${schema}.${table}`).digest('hex').slice(0, 12)
  const sql = statements(schema, table, id)
  const appliedTable = `${table}_applied`
  const name = (what: string): string => `substate_${id}_${what}`
  const state = poolState(pool)
  // A pool emits the error of an idle client's lost connection, a lone client its own: without a
  // listener that is an unhandled 'error' event, which ends the process.
  survive(pool)

  const poolSize = pool.options?.max
  // A pool's checkout (`pg.Pool#connect`; a lone `pg.Client#connect` is something else).
  const checkoutOf = pool as unknown as {
    connect?: () => Promise<{
      query(config: PgQueryConfig): Promise<{ rows: unknown[] }>
      release(err?: Error): void
    }>
  }
  /**
   * Runs one query within the deadline; the driver error is the rejection. On a single client
   * (no pool size) queries go one at a time, and one whose deadline passed while waiting is not
   * sent at all: the caller was told it failed.
   */
  const query = (config: PgQueryConfig): Promise<Record<string, unknown>[]> =>
    new Promise((resolve, reject) => {
      let expired = false
      const single = typeof poolSize !== 'number'
      const timer = setTimeout(() => {
        expired = true
        reject(new TimeoutError('postgres query', timeout))
      }, timeout)
      const done = (result: { rows: unknown[] }): void => {
        if (single) state.queued--
        clearTimeout(timer)
        resolve(result.rows as Record<string, unknown>[])
      }
      const failed = (e: unknown): void => {
        if (single) state.queued--
        clearTimeout(timer)
        reject(e)
      }
      const send = (): Promise<void> => {
        if (expired) {
          if (single) state.queued--
          return Promise.resolve()
        }
        try {
          return pool.query(config).then(done, failed)
        } catch (e) {
          failed(e) // a driver that throws instead of rejecting must not stall the queries after
          return Promise.resolve()
        }
      }
      // A pool's checkout can wait past the deadline: then the connection goes back unused, so a
      // query the caller was told failed is never sent later.
      const checkout = (): Promise<void> =>
        checkoutOf.connect!().then((client) => {
          // A connection lost mid-query: the query rejects (the commit fails with a StorageError)
          // and the client emits 'error', which must not end the process.
          survive(client)
          if (expired) return client.release()
          return client.query(config).then(
            (result) => {
              client.release()
              done(result)
            },
            (e: unknown) => {
              client.release(e instanceof Error ? e : undefined) // as pg.Pool#query does
              failed(e)
            },
          )
        }, failed)
      if (!single) void (typeof checkoutOf.connect === 'function' ? checkout() : send())
      else state.last = state.queued++ === 0 ? send() : state.last.then(send)
    })

  /** Set once this storage saw the table created: commits then skip the check. */
  let tableReady = !createTable
  const ensureTable = (): Promise<void> => {
    if (tableReady) return Promise.resolve()
    let created = state.created.get(sql.create[0]!)
    if (!created) {
      created = (async () => {
        for (const text of sql.create) {
          try {
            await query({ text })
          } catch (e) {
            // Another process created it between our check and our insert into the catalog.
            if (!ALREADY_CREATED.has(sqlState(e) ?? '')) throw e
          }
        }
      })()
      state.created.set(sql.create[0]!, created)
      // A failure is not remembered: the next operation tries again.
      created.catch(() => state.created.delete(sql.create[0]!))
    }
    return created.then(() => {
      tableReady = true
    })
  }

  const fail = (e: unknown, operation: string, subject: string | undefined): Error => {
    if (e instanceof StorageError) return e
    const message = e instanceof Error ? e.message : String(e)
    const code = sqlState(e)
    const hint =
      code === undefined || UNREACHABLE.test(code) || e instanceof TimeoutError
        ? ` (is PostgreSQL running at ${address(pool)}?)`
        : ` (SQLSTATE ${code})`
    return new StorageError(NAME, operation, subject, message + hint, { cause: e })
  }

  let lastPrune = 0
  let pruning: Promise<unknown> = Promise.resolve()
  const prune = (): void => {
    // Expired idempotency keys go in the background, at most a few times per TTL; a failure only
    // delays it to the next time.
    const now = Date.now()
    if (now - lastPrune < Math.min(idempotencyTtl * 250, 3_600_000)) return
    lastPrune = now
    pruning = query({ text: sql.prune, values: [idempotencyTtl] }).catch(() => undefined)
  }

  const concurrency =
    typeof poolSize === 'number' ? Math.max(1, Math.min(CONCURRENCY, poolSize)) : 1
  const shell = new AdapterShell({
    name: NAME,
    connection: pool,
    // Storages configured alike share queues (and so serialize their commits of a subject); the
    // settings their closures use are part of the key.
    settings: JSON.stringify([schema, table, timeout, idempotencyTtl, createTable]),
    policy,
    commits: () => ({
      storage: NAME,
      maxBatch: MAX_BATCH,
      concurrency,
      execute: (batch) => {
        const run = (): Promise<EntryOutcome[]> => {
          if (batch.some((e) => e.idempotencyKey !== undefined)) prune()
          return execute(batch, sql, name, query)
        }
        return tableReady ? run() : ensureTable().then(run)
      },
      retryable: (e) => {
        const code = sqlState(e)
        // A duplicate key in the side table: another process applied the same key concurrently.
        return (
          code !== undefined &&
          (RETRYABLE.has(code) || (code === '23505' && tableOf(e) === appliedTable))
        )
      },
      fail: (e, subject) => fail(e, 'commit', subject),
    }),
    units: () => ({
      storage: NAME,
      maxBatch: MAX_BATCH,
      concurrency,
      execute: (batch) => {
        const run = () => {
          if (batch.some((u) => u.key !== undefined)) prune()
          return executeUnits(batch, sql, name, query)
        }
        return tableReady ? run() : ensureTable().then(run)
      },
      retryable: (e) => {
        const code = sqlState(e)
        return code !== undefined && RETRYABLE.has(code)
      },
      fail: (e) => fail(e, 'commitUnit', undefined),
    }),
    run: async (operation, subject, fn) => {
      if (subject?.includes('\u0000'))
        throw new StorageError(
          NAME,
          operation,
          subject,
          'PostgreSQL text cannot hold the NUL character',
        )
      try {
        await ensureTable()
        return await fn()
      } catch (e) {
        throw fail(e, operation, subject)
      }
    },
    validateUnit: (unit) => {
      const invalid = nulInUnit(unit)
      return (
        invalid && `${invalid} holds the NUL character (\\u0000), which PostgreSQL cannot store`
      )
    },
  })

  const op = shell.op.bind(shell)

  const snapshot = (subject: string, row: Record<string, unknown> | undefined): SubjectSnapshot =>
    row
      ? rowSnapshot(subject, row.p as string | null, row.e as string | null)
      : { props: {}, ext: {} }

  const outbox: OutboxStore = {
    claim(owner, limit, lease) {
      return op('claim', undefined, async () => {
        const rows = await query({
          name: name('claim'),
          text: sql.claim,
          values: [owner, limit, lease],
        })
        return rows
          .sort((a, b) => Number(a.seq) - Number(b.seq))
          .map((r) => ({ id: r.id as string, body: r.body as string }))
      })
    },
    remove(ids) {
      return op('remove', undefined, async () => {
        if (ids.length > 0) await query({ name: name('remove'), text: sql.remove, values: [ids] })
      })
    },
    size() {
      return op('size', undefined, async () => {
        const rows = await query({ name: name('size'), text: sql.size })
        return Number(rows[0]?.n ?? 0)
      })
    },
  }

  return {
    name: NAME,
    capabilities: { persistent: true, atomic: true, idempotent: true },
    outbox,

    commitUnit(unit: UnitCommit): Promise<UnitCommitResult> {
      return shell.commitUnit(unit)
    },

    load(subject) {
      return op('load', subject, async () => {
        const rows = await query({ name: name('load'), text: sql.load, values: [subject] })
        return snapshot(subject, rows[0])
      })
    },

    commit(subject, changes, options) {
      return shell.commit(subject, changes, options)
    },

    get(subject, kind, prop) {
      return op('get', subject, async () => {
        const rows = await query(
          kind === 'prop'
            ? { name: name('get_p'), text: sql.getProp, values: [subject, prop] }
            : { name: name('get_e'), text: sql.getExt, values: [subject, prop] },
        )
        const type = rows[0]?.t as string | null | undefined
        if (type != null && type !== 'object')
          storedObject(subject, kind === 'prop' ? 'properties' : 'ext_properties', `a JSON ${type}`)
        const raw = (rows[0]?.v as string | null | undefined) ?? null
        return raw === null ? undefined : { value: parseRaw(raw, NAME, subject, prop)! }
      })
    },

    flush(subject) {
      return op('flush', subject, async () => {
        const rows = await query({ name: name('flush'), text: sql.flush, values: [subject] })
        shell.forget(subject)
        return snapshot(subject, rows[0])
      })
    },

    async *subjects(pattern) {
      const match = pattern === undefined ? () => true : compileGlob(pattern)
      const prefix = literalPrefix(pattern ?? '')
      let after: string | null = null
      for (;;) {
        const rows = await op('subjects', undefined, () =>
          query({ name: name('list'), text: sql.list, values: [after, prefix] }),
        )
        for (const row of rows) {
          const s = row.s as string
          if (match(s)) yield s
        }
        if (rows.length < 500) return
        after = rows[rows.length - 1]!.s as string
      }
    },

    close() {
      return shell.close(pruning)
    },
  }
}
