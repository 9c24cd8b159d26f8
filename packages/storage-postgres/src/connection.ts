/*
 * The PostgreSQL connection side of the adapter: what it needs of a pool or client, the state
 * storages of one pool share, the 'error' listeners that keep a lost connection from ending the
 * process, and reading driver errors.
 */

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

export const NAME = 'storage-postgres' as const
export const MAX_BATCH = 100
export const CONCURRENCY = 4
/** SQLSTATEs of races PostgreSQL resolves by failing one side: the statement is retried. */
export const RETRYABLE: ReadonlySet<string> = new Set(['40P01', '40001'])
/** SQLSTATEs of a concurrent `CREATE ... IF NOT EXISTS` that got there first. */
export const ALREADY_CREATED: ReadonlySet<string> = new Set(['23505', '42P07', '42710'])
/** Error codes that mean the server is not reachable: the message gets a hint. */
export const UNREACHABLE: RegExp =
  /^E(CONNREFUSED|CONNRESET|NOTFOUND|TIMEDOUT|HOSTUNREACH|NETUNREACH|PIPE)$/

/** Table creation and a single client's query chain, shared by the storages of one pool. */
export interface PoolState {
  readonly created: Map<string, Promise<void>>
  /** On a single client: the last query sent, which the next one waits for. */
  last: Promise<unknown>
  /** On a single client: queries sent or waiting (the first of a quiet client goes at once). */
  queued: number
}
const pools = new WeakMap<PgQueryable, PoolState>()

/** Emitters (pools, clients) that already have the storage's 'error' listener. */
const guarded = new WeakSet<object>()
const ignore = (): void => {}

/**
 * Gives a pool or client an 'error' listener, once. The errors it sees also reach the queries
 * they broke, which fail with a StorageError; the pool replaces a broken client on its own.
 */
export function survive(emitter: unknown): void {
  const e = emitter as { on?: (event: string, fn: () => void) => void } | null
  if (typeof e?.on !== 'function' || guarded.has(e)) return
  guarded.add(e)
  e.on('error', ignore)
}

export function poolState(pool: PgQueryable): PoolState {
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

export function sqlState(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : undefined
}

export function tableOf(e: unknown): string | undefined {
  const t = (e as { table?: unknown } | null)?.table
  return typeof t === 'string' ? t : undefined
}

/** Where the pool connects, for error hints. */
export function address(pool: PgQueryable): string {
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
