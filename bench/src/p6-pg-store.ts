/**
 * P6: PostgreSQL `store()` of 1,000 subjects × 5 properties through a `pg.Pool` of 10: 5 cached
 * `set`s per subject (untimed), then every subject's `store()` at once, timed (the subjects are
 * loaded beforehand, as in a running service). The details also give the ratio with the cached
 * `set`s timed too. Baseline: one multi-row upsert of the 1,000 rows merging the same
 * properties (`INSERT ... SELECT FROM jsonb_to_recordset ... ON CONFLICT DO UPDATE SET
 * properties = properties || excluded.properties`), without old values, events or checks.
 */
import { createContainer, type Subject } from '@substate/core'
import { createPostgresStorage } from '@substate/storage-postgres'
import pg from 'pg'
import { type Benchmark, compare, fmt } from './harness.js'
import { comparePhased } from './phased.js'

const URL = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test'
const SCHEMA = `substate_bench_p6_${process.pid}`
const SUBJECTS = 1000
const PROPS = ['cpu', 'memory', 'health', 'tags', 'site'] as const

const values = (n: number) => [
  n % 100,
  (n * 7) % 100,
  n % 2 ? 'ok' : 'degraded',
  ['a', n],
  `site-${n % 50}`,
]

const UPSERT = `INSERT INTO "${SCHEMA}".raw AS t (subject_name, properties, ext_properties, updated_at)
SELECT r.s, r.p, '{}', now() FROM jsonb_to_recordset($1::jsonb) AS r(s text, p jsonb)
ON CONFLICT (subject_name) DO UPDATE
SET properties = t.properties || excluded.properties, updated_at = excluded.updated_at`

export const benchmarks: Benchmark[] = [
  {
    id: 'P6',
    title: 'PostgreSQL store() of 1,000 subjects x 5 properties vs a raw multi-row upsert',
    async run() {
      const pool = new pg.Pool({ connectionString: URL, max: 10 })
      try {
        await pool.query('SELECT 1').catch((e: unknown) => {
          throw new Error(`P6 needs PostgreSQL at ${URL} (set DATABASE_URL): ${String(e)}`)
        })
        await pool.query(`CREATE SCHEMA "${SCHEMA}"`)
        await pool.query(
          `CREATE TABLE "${SCHEMA}".raw (subject_name text PRIMARY KEY,
            properties jsonb NOT NULL DEFAULT '{}', ext_properties jsonb NOT NULL DEFAULT '{}',
            updated_at timestamp DEFAULT now())`,
        )
        const container = createContainer({
          storage: createPostgresStorage({ pool, schema: SCHEMA, table: 'subjects' }),
          maxSubjects: SUBJECTS * 2,
        })
        const subjects: Subject[] = Array.from({ length: SUBJECTS }, (_, i) =>
          container.subject(`device:${i}`),
        )
        for (const s of subjects) await s.set('cpu', -1)
        await Promise.all(subjects.map((s) => s.store()))

        let n = 0
        const dirty = async (): Promise<void> => {
          n++
          for (const s of subjects) {
            const v = values(n)
            for (let p = 0; p < PROPS.length; p++) await s.set(PROPS[p]!, v[p]!)
          }
        }
        const store = async (): Promise<number> => {
          await Promise.all(subjects.map((s) => s.store()))
          return SUBJECTS
        }
        const raw = async (): Promise<number> => {
          n++
          const rows = Array.from({ length: SUBJECTS }, (_, i) => {
            const v = values(n)
            return { s: `device:${i}`, p: Object.fromEntries(PROPS.map((p, j) => [p, v[j]])) }
          })
          await pool.query({ name: 'p6-raw', text: UPSERT, values: [JSON.stringify(rows)] })
          return SUBJECTS
        }
        const opts = { rounds: 5, ms: 1000 }
        const r = await comparePhased(
          { prepare: dirty, run: store },
          { prepare: () => {}, run: raw },
          opts,
        )
        const withSets = await compare(
          async () => {
            await dirty()
            return store()
          },
          raw,
          opts,
        )
        await container.close()
        return [
          {
            id: 'P6',
            goal: 0.5,
            ratio: r.ratio,
            details: [
              `store():         substate ${fmt(r.candidate)} subjects/s (5 properties each), raw multi-row upsert ${fmt(r.baseline)} subjects/s, ratio ${r.ratio.toFixed(2)}`,
              `sets + store():  substate ${fmt(withSets.candidate)} subjects/s, raw ${fmt(withSets.baseline)} subjects/s, ratio ${withSets.ratio.toFixed(2)}`,
            ],
          },
        ]
      } finally {
        await pool.query(`DROP SCHEMA IF EXISTS "${SCHEMA}" CASCADE`)
        await pool.end()
      }
    },
  },
]
