import { createHash } from 'node:crypto'
import {
  compileGlob,
  type JsonValue,
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
  type BatchEntry,
  type EntryOutcome,
  literalPrefix,
  losesPrecision,
  objectMembers,
  parseRaw,
  type Raw,
  SnapshotBuilder,
} from '@substate/core/storage-kit'
import { type Statements, statements } from './sql.js'

/** A query as the storage sends it: always parameterized, named when it is prepared. */
export interface PgQueryConfig {
  /** The prepared statement's name (pg prepares it once per connection). */
  readonly name?: string
  /** The SQL, with `$1`... placeholders. */
  readonly text: string
  /** The parameters. */
  readonly values?: unknown[]
}

/**
 * The part of a `pg` `Pool` (or `Client`) the storage uses: `query`, and where it connects (for
 * error messages). A `Pool` is the usual choice. A single `Client` works too: it is sent one query
 * at a time (pg deprecates queueing queries on a busy client).
 */
export interface PgQueryable {
  /** Runs one query (`pg.Pool#query`, `pg.Client#query`). */
  query(config: PgQueryConfig): Promise<{ rows: unknown[] }>
  /** A Pool's settings; `max` (its size) tells a pool from a single client. */
  readonly options?: {
    readonly host?: string | undefined
    readonly port?: number | undefined
    readonly connectionString?: string | undefined
    readonly max?: number | undefined
  }
  /** A Client's host. */
  readonly host?: string
  /** A Client's port. */
  readonly port?: number
}

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

const NAME = 'storage-postgres'
const MAX_BATCH = 100
const CONCURRENCY = 4
/** SQLSTATEs of races PostgreSQL resolves by failing one side: the statement is retried. */
const RETRYABLE = new Set(['40P01', '40001'])
/** SQLSTATEs of a concurrent `CREATE ... IF NOT EXISTS` that got there first. */
const ALREADY_CREATED = new Set(['23505', '42P07', '42710'])
/** Error codes that mean the server is not reachable: the message gets a hint. */
const UNREACHABLE = /^E(CONNREFUSED|CONNRESET|NOTFOUND|TIMEDOUT|HOSTUNREACH|NETUNREACH|PIPE)$/

/** Table creation and a single client's query chain, shared by the storages of one pool. */
interface PoolState {
  readonly created: Map<string, Promise<void>>
  /** On a single client: the last query sent, which the next one waits for. */
  last: Promise<unknown>
  /** On a single client: queries sent or waiting (the first of a quiet client goes at once). */
  queued: number
}
const pools = new WeakMap<PgQueryable, PoolState>()

/** A stored value as a JSON object member, for building a parameter without re-encoding. */
const member = (name: string, raw: string): string => `${JSON.stringify(name)}:${raw}`
/** Whether JSON text holds the escaped NUL character, which jsonb cannot store. */
const NUL = /(?:^|[^\\])(?:\\\\)*\\u0000/

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

/** Emitters (pools, clients) that already have the storage's 'error' listener. */
const guarded = new WeakSet<object>()
const ignore = (): void => {}

/**
 * Gives a pool or client an 'error' listener, once. The errors it sees also reach the queries
 * they broke, which fail with a StorageError; the pool replaces a broken client on its own.
 */
function survive(emitter: unknown): void {
  const e = emitter as { on?: (event: string, fn: () => void) => void } | null
  if (typeof e?.on !== 'function' || guarded.has(e)) return
  guarded.add(e)
  e.on('error', ignore)
}

function poolState(pool: PgQueryable): PoolState {
  let state = pools.get(pool)
  if (!state) {
    state = {
      created: new Map(),
      last: Promise.resolve(),
      queued: 0,
    }
    pools.set(pool, state)
  }
  return state
}

/** One entry's writes and checks, per column (`p` properties, `e` ext_properties). */
interface Column {
  /** `"name":json` members of the object of values to set. */
  readonly set: string[]
  readonly del: string[]
  /** `"name":json` members of the object of expected values. */
  readonly expect: string[]
  readonly absent: string[]
  /** Names whose old values to return. */
  readonly keep: string[]
}

const column = (): Column => ({ set: [], del: [], expect: [], absent: [], keep: [] })

function columns(e: BatchEntry): { p: Column; e: Column } {
  const col = { p: column(), e: column() }
  for (const f of e.fields) {
    const c = f.kind === 'prop' ? col.p : col.e
    c.keep.push(f.name)
    if (e.probe) continue
    if (f.write === null) c.del.push(f.name)
    else c.set.push(member(f.name, f.write))
    if (f.expect === null) c.absent.push(f.name)
    else if (f.expect !== undefined) c.expect.push(member(f.name, f.expect))
  }
  return col
}

/**
 * The old values of an entry's fields, from the `op`/`oe` columns of a result row: JSON arrays of
 * the JSON texts of its `prop` and `ext` fields, in order (null when the row did not exist).
 */
function olds(e: BatchEntry, row: Record<string, unknown>): Raw[] {
  const op = row.op == null ? [] : (JSON.parse(row.op as string) as Raw[])
  const oe = row.oe == null ? [] : (JSON.parse(row.oe as string) as Raw[])
  let p = 0
  let x = 0
  return e.fields.map((f) => (f.kind === 'prop' ? op[p++] : oe[x++]) ?? null)
}

/**
 * Whether an entry can be written blind: its old values are not needed, it has no checks, and it
 * sets something (a change set that only deletes may empty the row, which must then be deleted:
 * that needs the row read).
 */
const isBlind = (e: BatchEntry, col: { p: Column; e: Column }): boolean =>
  !e.oldValues &&
  !e.probe &&
  e.fields.every((f) => f.expect === undefined) &&
  (col.p.set.length > 0 || col.e.set.length > 0)

/**
 * Applies a batch: a batch of blind entries (see `isBlind`) by one upsert; a lone commit to an existing row by the lighter statement of the fast path,
 * and otherwise (or when the row is missing) with the batch statement.
 */
async function execute(
  batch: readonly BatchEntry[],
  sql: Statements,
  name: (what: string) => string,
  query: (config: PgQueryConfig) => Promise<Record<string, unknown>[]>,
): Promise<EntryOutcome[]> {
  const outcomes: (EntryOutcome | undefined)[] = new Array(batch.length)
  const valid: Array<{ i: number; e: BatchEntry; col: { p: Column; e: Column } }> = []
  for (const [i, e] of batch.entries()) {
    const invalid = nulIn(e)
    if (invalid)
      outcomes[i] = {
        status: 'failed',
        error: new StorageError(
          NAME,
          'commit',
          e.subject,
          `${invalid} holds the NUL character (\\u0000), which PostgreSQL jsonb cannot store`,
        ),
      }
    else valid.push({ i, e, col: columns(e) })
  }
  if (valid.length > 0 && valid.every(({ e, col }) => isBlind(e, col))) {
    // Only sets and deletes whose old values are not needed: one upsert, no read of the rows.
    const entries = valid.map(
      ({ i, e, col: { p, e: x } }) =>
        `{"i":${i},"s":${JSON.stringify(e.subject)},` +
        `"key":${e.idempotencyKey === undefined ? 'null' : JSON.stringify(e.idempotencyKey)},` +
        `"sp":{${p.set}},"se":{${x.set}}}`,
    )
    const deleted = (pick: (col: { p: Column; e: Column }) => string[]): string =>
      `{${valid
        .filter(({ col }) => pick(col).length > 0)
        .map(({ e, col }) => `${JSON.stringify(e.subject)}:${JSON.stringify(pick(col))}`)}}`
    const keyed = valid.some(({ e }) => e.idempotencyKey !== undefined)
    const rows = await query({
      name: name(keyed ? 'blind' : 'blind_plain'),
      text: keyed ? sql.blind : sql.blindPlain,
      values: [
        `[${entries}]`,
        keyed ? valid.map((v) => v.e.subject) : [],
        deleted((c) => c.p.del),
        deleted((c) => c.e.del),
      ],
    })
    if (!keyed) {
      const written = new Set(rows.map((r) => r.s as string))
      for (const { i, e } of valid)
        outcomes[i] = written.has(e.subject)
          ? { status: 'applied', old: batch[i]!.fields.map(() => null) }
          : { status: 'failed', error: notObject(e.subject) }
    } else
      for (const row of rows) {
        const i = Number(row.i)
        const status = Number(row.status)
        outcomes[i] =
          status === 2
            ? { status: 'duplicate' }
            : status === 5
              ? { status: 'failed', error: notObject(batch[i]!.subject) }
              : { status: 'applied', old: batch[i]!.fields.map(() => null) }
      }
    return outcomes.map((o) => o ?? { status: 'failed', error: new Error('no result row') })
  }
  const lone = valid.length === 1 ? valid[0]! : undefined
  if (
    lone &&
    !lone.e.probe &&
    lone.e.idempotencyKey === undefined &&
    // A change set that only deletes may empty the row, which the batch statement removes.
    (lone.col.p.set.length > 0 || lone.col.e.set.length > 0)
  ) {
    const { p, e } = lone.col
    // Properties only, no deletes, no absent checks: the leaner statements.
    const props = p.del.length === 0 && p.absent.length === 0 && e.keep.length === 0
    const one = props && lone.e.fields.length === 1 ? lone.e.fields[0]! : undefined
    const rows = await query(
      one
        ? {
            name: name('update_1'),
            text: sql.updateProp,
            values: [lone.e.subject, one.name, one.write, one.expect ?? null],
          }
        : props
          ? {
              name: name('update_p'),
              text: sql.updateProps,
              values: [lone.e.subject, `{${p.set}}`, `{${p.expect}}`, p.keep],
            }
          : {
              name: name('update'),
              text: sql.update,
              values: [
                lone.e.subject,
                p.del,
                `{${p.set}}`,
                `{${p.expect}}`,
                p.absent,
                p.keep,
                e.del,
                `{${e.set}}`,
                `{${e.expect}}`,
                e.absent,
                e.keep,
              ],
            },
    )
    const row = rows[0]
    const bad = row && badColumn(lone.e.subject, row)
    if (bad) {
      outcomes[lone.i] = { status: 'failed', error: bad }
      return outcomes as EntryOutcome[]
    }
    if (row) {
      const values = one ? [(row.v as Raw | undefined) ?? null] : olds(lone.e, row)
      outcomes[lone.i] =
        row.done === true || row.done === 't'
          ? { status: 'applied', old: values }
          : { status: 'conflict', current: values }
      return outcomes as EntryOutcome[]
    }
  }
  if (valid.length > 0) {
    const entries = valid.map(
      ({ i, e, col: { p, e: x } }) =>
        `{"i":${i},"s":${JSON.stringify(e.subject)},"probe":${e.probe},` +
        `"key":${e.idempotencyKey === undefined ? 'null' : JSON.stringify(e.idempotencyKey)},` +
        `"sp":{${p.set}},"dp":${JSON.stringify(p.del)},"se":{${x.set}},"de":${JSON.stringify(x.del)},` +
        `"ep":{${p.expect}},"ap":${JSON.stringify(p.absent)},` +
        `"ee":{${x.expect}},"ae":${JSON.stringify(x.absent)},` +
        `"kp":${JSON.stringify(p.keep)},"ke":${JSON.stringify(x.keep)}}`,
    )
    const rows = await query({
      name: name('commit'),
      text: sql.commit,
      values: [`[${entries}]`, valid.map((v) => v.e.subject)],
    })
    for (const row of rows) {
      const i = Number(row.i)
      const bad = badColumn(batch[i]!.subject, row)
      if (bad) {
        outcomes[i] = { status: 'failed', error: bad }
        continue
      }
      const values = olds(batch[i]!, row)
      const status = Number(row.status)
      outcomes[i] =
        status === 1
          ? { status: 'applied', old: values }
          : status === 2
            ? { status: 'duplicate' }
            : { status: 'conflict', current: status === 3 ? undefined : values }
    }
  }
  return outcomes.map((o) => o ?? { status: 'failed', error: new Error('no result row') })
}

/** A StorageError for a row whose `tp`/`te` (jsonb types of its columns) are not objects. */
function badColumn(subject: string, row: Record<string, unknown>): StorageError | undefined {
  for (const [col, type] of [
    ['properties', row.tp],
    ['ext_properties', row.te],
  ] as const)
    if (type != null && type !== 'object')
      return new StorageError(
        NAME,
        'commit',
        subject,
        `the ${col} column holds a JSON ${String(type)}, not an object (written by another tool?): nothing was written`,
      )
  return undefined
}

const notObject = (subject: string): StorageError =>
  new StorageError(
    NAME,
    'commit',
    subject,
    'the properties or ext_properties column holds JSON that is not an object (written by another tool?): nothing was written',
  )

/** What in an entry PostgreSQL cannot store (NUL in text or jsonb), if anything. */
function nulIn(e: BatchEntry): string | undefined {
  if (e.subject.includes('\u0000')) return 'the subject name'
  if (e.idempotencyKey?.includes('\u0000')) return 'the idempotency key'
  for (const f of e.fields) {
    if (f.name.includes('\u0000')) return `the name of ${JSON.stringify(f.name)}`
    if (f.write?.includes('\\u0000') && NUL.test(f.write)) return `the value of ${f.name}`
  }
  return undefined
}

/**
 * A row as a snapshot, from its two jsonb columns as text. NULL (from another tool) reads as
 * empty; a column that is not an object is a StorageError naming it. jsonb compares values, not
 * texts, so only a value whose numbers a double cannot hold (integers above 2^53) gets its stored
 * text in `raw`.
 */
function rowSnapshot(subject: string, p: string | null, e: string | null): SubjectSnapshot {
  const props = storedObject(subject, 'properties', p)
  const ext = storedObject(subject, 'ext_properties', e)
  if (!(p !== null && losesPrecision(p)) && !(e !== null && losesPrecision(e)))
    return { props, ext }
  const b = new SnapshotBuilder('semantic')
  if (p !== null) for (const [k, v] of objectMembers(p)) b.add('prop', k, v)
  if (e !== null) for (const [k, v] of objectMembers(e)) b.add('ext', k, v)
  return b.build()
}

function storedObject(
  subject: string,
  name: string,
  text: string | null,
): Record<string, JsonValue> {
  if (text === null) return {}
  if (text[0] !== '{')
    throw new StorageError(
      NAME,
      'read',
      subject,
      `the ${name} column holds ${text.length > 40 ? `${text.slice(0, 40)}…` : text}, not a JSON object (written by another tool?)`,
    )
  return parseRaw(text, NAME, subject, name) as Record<string, JsonValue>
}

/** What in a unit PostgreSQL cannot store (NUL in text or jsonb), if anything. */
function nulInUnit(u: UnitCommit): string | undefined {
  if (u.key?.includes('\u0000')) return 'the unit key'
  for (const m of u.outbox ?? [])
    if (m.id.includes('\u0000') || m.body.includes('\u0000')) return `outbox message ${m.id}`
  for (const e of u.entries) {
    if (e.subject.includes('\u0000')) return 'a subject name'
    for (const w of e.writes) {
      if (w.name.includes('\u0000')) return `the name of ${JSON.stringify(w.name)}`
      if (w.value?.includes('\\u0000') && NUL.test(w.value)) return `the value of ${w.name}`
    }
    for (const c of e.checks) if (c.name.includes('\u0000')) return `a checked name`
  }
  return undefined
}

/** Applies units with the units function, in one statement. */
async function executeUnits(
  batch: readonly UnitCommit[],
  sql: Statements,
  name: (what: string) => string,
  query: (config: PgQueryConfig) => Promise<Record<string, unknown>[]>,
): Promise<(UnitCommitResult | Error)[]> {
  const units = batch.map((u) => {
    const entries = u.entries.map((e) => {
      const col = {
        prop: {
          c: [] as string[],
          a: [] as string[],
          n: 'null',
          s: [] as string[],
          d: [] as string[],
        },
        ext: {
          c: [] as string[],
          a: [] as string[],
          n: 'null',
          s: [] as string[],
          d: [] as string[],
        },
      }
      for (const c of e.checks) {
        if (c.expect === null) col[c.kind].a.push(c.name)
        else col[c.kind].c.push(member(c.name, c.expect))
      }
      for (const n of e.names ?? []) col[n.kind].n = JSON.stringify([...new Set(n.names)])
      for (const w of e.writes) {
        if (w.value === null) col[w.kind].d.push(w.name)
        else col[w.kind].s.push(member(w.name, w.value))
      }
      const { prop: p, ext: x } = col
      return (
        `{"s":${JSON.stringify(e.subject)},"cp":{${p.c}},"ap":${JSON.stringify(p.a)},"np":${p.n},` +
        `"sp":{${p.s}},"dp":${JSON.stringify(p.d)},"ce":{${x.c}},"ae":${JSON.stringify(x.a)},` +
        `"ne":${x.n},"se":{${x.s}},"de":${JSON.stringify(x.d)}}`
      )
    })
    return (
      `{"key":${u.key === undefined ? 'null' : JSON.stringify(u.key)},` +
      `"owner":${JSON.stringify(u.owner ?? '')},"lease":${Math.max(0, Math.round(u.lease ?? 30_000))},` +
      `"o":${JSON.stringify(u.outbox ?? [])},"e":[${entries}]}`
    )
  })
  const rows = await query({ name: name('units'), text: sql.units, values: [`[${units}]`] })
  const results = JSON.parse(rows[0]!.r as string) as Array<{
    st: number
    stale?: Record<string, [string, string]>
    s?: string
    col?: string
    type?: string
  }>
  return results.map((r): UnitCommitResult | Error => {
    if (r.st === 1) return { status: 'applied' }
    if (r.st === 2) return { status: 'duplicate' }
    if (r.st === 4)
      return new StorageError(
        NAME,
        'commitUnit',
        r.s,
        `the ${r.col} column holds a JSON ${r.type}, not an object (written by another tool?): nothing was written`,
      )
    const stale: Record<string, SubjectSnapshot> = {}
    try {
      for (const [subject, [p, e]] of Object.entries(r.stale ?? {}))
        Object.defineProperty(stale, subject, {
          value: rowSnapshot(subject, p, e),
          enumerable: true,
        })
    } catch (e) {
      return e as Error
    }
    return { status: 'conflict', stale }
  })
}

function sqlState(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : undefined
}

function tableOf(e: unknown): string | undefined {
  const t = (e as { table?: unknown } | null)?.table
  return typeof t === 'string' ? t : undefined
}

/** Where the pool connects, for error hints. */
function address(pool: PgQueryable): string {
  const o = pool.options
  let host = o?.host ?? pool.host
  let port = o?.port ?? pool.port
  if (o?.connectionString && (host === undefined || port === undefined)) {
    try {
      const url = new URL(o.connectionString)
      host ??= url.hostname || undefined
      port ??= Number(url.port) || undefined
    } catch {
      // Not a URL (a libpq key/value string): fall back to the defaults.
    }
  }
  return `${host ?? '127.0.0.1'}:${port ?? 5432}`
}
