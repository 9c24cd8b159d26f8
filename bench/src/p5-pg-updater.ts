/**
 * P5: PostgreSQL write-through updater, `subject.set('n', (n = 0) => n + 1, { cache: false })`,
 * through one `pg.Client` and through a `pg.Pool` of 10: awaited one by one (one subject) and 50
 * in flight (50 subjects). Baseline: the same increment as one hand-written statement that
 * reads, modifies and writes on the server (a CTE locking the row, then an upsert returning the
 * old and new value), prepared, on the same client or pool. The summary ratio is the worst of
 * the four.
 */
import { createContainer, type Subject } from '@substate/core'
import { createPostgresStorage } from '@substate/storage-postgres'
import pg from 'pg'
import { type Benchmark, type Comparison, compare, fmt } from './harness.js'

const URL = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test'
const SCHEMA = `substate_bench_p5_${process.pid}`
const ONE_BY_ONE = 100
const IN_FLIGHT = 50

const RAW = `WITH old AS (
  SELECT properties -> 'n' AS n FROM "${SCHEMA}".raw WHERE subject_name = $1 FOR UPDATE
)
INSERT INTO "${SCHEMA}".raw AS t (subject_name, properties, updated_at)
VALUES ($1, '{"n": 1}', now())
ON CONFLICT (subject_name) DO UPDATE SET
  properties = t.properties || jsonb_build_object('n', COALESCE((t.properties ->> 'n')::int, 0) + 1),
  updated_at = now()
RETURNING (SELECT n FROM old)::text AS old, (t.properties -> 'n')::text AS new`

const inc = (n: number | undefined = 0): number => n + 1

async function measure(
  db: pg.Pool | pg.Client,
  label: string,
): Promise<{ one: Comparison; many: Comparison; label: string }> {
  const table = `t_${label}`
  const container = createContainer({
    storage: createPostgresStorage({ pool: db, schema: SCHEMA, table }),
  })
  // On a single client, one query at a time (pg deprecates queueing on a busy client), as the
  // storage does; pg would send them one by one anyway.
  let last: Promise<unknown> = Promise.resolve()
  const raw = (subject: string): Promise<unknown> => {
    const send = () => db.query({ name: 'p5-raw', text: RAW, values: [subject] })
    if (db instanceof pg.Pool) return send()
    last = last.then(send, send)
    return last
  }
  const one: Subject = container.subject('one')
  const many: Subject[] = Array.from({ length: IN_FLIGHT }, (_, i) =>
    container.subject(`many:${i}`),
  )
  const rawMany = Array.from({ length: IN_FLIGHT }, (_, i) => `${label}-many:${i}`)
  const opts = { rounds: 5, ms: 500 }
  const oneByOne = await compare(
    async () => {
      for (let i = 0; i < ONE_BY_ONE; i++) await one.set('n', inc, { cache: false })
      return ONE_BY_ONE
    },
    async () => {
      for (let i = 0; i < ONE_BY_ONE; i++) await raw(`${label}-one`)
      return ONE_BY_ONE
    },
    opts,
  )
  const concurrent = await compare(
    async () => {
      await Promise.all(many.map((s) => s.set('n', inc, { cache: false })))
      return IN_FLIGHT
    },
    async () => {
      await Promise.all(rawMany.map((s) => raw(s)))
      return IN_FLIGHT
    },
    opts,
  )
  await container.close()
  return { one: oneByOne, many: concurrent, label }
}

const line = (what: string, c: Comparison): string =>
  `${what.padEnd(26)} substate ${fmt(c.candidate)} updates/s, raw ${fmt(c.baseline)} updates/s, ratio ${c.ratio.toFixed(2)}`

export const benchmarks: Benchmark[] = [
  {
    id: 'P5',
    title: 'PostgreSQL write-through updater vs a raw single-statement read-modify-write',
    async run() {
      const admin = new pg.Pool({ connectionString: URL, max: 1 })
      const client = new pg.Client({ connectionString: URL })
      const pool = new pg.Pool({ connectionString: URL, max: 10 })
      try {
        await admin.query('SELECT 1').catch((e: unknown) => {
          throw new Error(`P5 needs PostgreSQL at ${URL} (set DATABASE_URL): ${String(e)}`)
        })
        await admin.query(`CREATE SCHEMA "${SCHEMA}"`)
        await admin.query(
          `CREATE TABLE "${SCHEMA}".raw (subject_name text PRIMARY KEY,
            properties jsonb NOT NULL DEFAULT '{}', ext_properties jsonb NOT NULL DEFAULT '{}',
            updated_at timestamp DEFAULT now())`,
        )
        await client.connect()
        const single = await measure(client, 'client')
        const pooled = await measure(pool, 'pool')
        const all = [single.one, single.many, pooled.one, pooled.many]
        return [
          {
            id: 'P5',
            goal: 0.8,
            ratio: Math.min(...all.map((c) => c.ratio)),
            details: [
              line('1 client, one by one:', single.one),
              line('1 client, 50 in flight:', single.many),
              line('pool of 10, one by one:', pooled.one),
              line('pool of 10, 50 in flight:', pooled.many),
            ],
          },
        ]
      } finally {
        await client.end().catch(() => undefined)
        await pool.end()
        await admin.query(`DROP SCHEMA IF EXISTS "${SCHEMA}" CASCADE`)
        await admin.end()
      }
    },
  },
]
