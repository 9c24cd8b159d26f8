/**
 * P4: Redis `store()` of 1,000 subjects × 5 properties: 5 cached `set`s per subject (untimed),
 * then every subject's `store()` at once, timed (the subjects are loaded beforehand, as in a
 * running service). Baseline: one ioredis pipeline of 1,000 `HSET key p1 v1 ... p5 v5` — the same
 * KRules hashes written blind, without old values, events or atomicity across commands. The
 * details also give the ratio with the cached `set`s timed too.
 */
import { createContainer, type Subject } from '@substate/core'
import { createRedisStorage } from '@substate/storage-redis'
import { Redis } from 'ioredis'
import { type Benchmark, compare, fmt } from './harness.js'
import { comparePhased } from './phased.js'

const URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379'
const PREFIX = `substate-bench:p4:${process.pid}:`
const SUBJECTS = 1000
const PROPS = ['cpu', 'memory', 'health', 'tags', 'site'] as const

const values = (n: number) => [
  n % 100,
  (n * 7) % 100,
  n % 2 ? 'ok' : 'degraded',
  ['a', n],
  `site-${n % 50}`,
]

async function sweep(client: Redis): Promise<void> {
  let cursor = '0'
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `?:${PREFIX}*`, 'COUNT', 1000)
    cursor = next
    if (keys.length > 0) await client.del(...keys)
  } while (cursor !== '0')
}

export const benchmarks: Benchmark[] = [
  {
    id: 'P4',
    title: 'Redis store() of 1,000 subjects x 5 properties vs a raw pipeline of HSETs',
    async run() {
      const client = new Redis(URL, { maxRetriesPerRequest: 1 })
      try {
        await client.ping().catch((e: unknown) => {
          throw new Error(`P4 needs Redis at ${URL} (set REDIS_URL): ${String(e)}`)
        })
        const container = createContainer({
          storage: createRedisStorage({ client, prefix: PREFIX }),
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
          const pipeline = client.pipeline()
          for (let i = 0; i < SUBJECTS; i++) {
            const v = values(n)
            const args: string[] = []
            for (let p = 0; p < PROPS.length; p++) args.push(`p${PROPS[p]}`, JSON.stringify(v[p]))
            pipeline.hset(`s:${PREFIX}raw:${i}`, ...args)
          }
          await pipeline.exec()
          return SUBJECTS
        }
        const r = await comparePhased(
          { prepare: dirty, run: store },
          { prepare: () => {}, run: raw },
        )
        const withSets = await compare(async () => {
          await dirty()
          return store()
        }, raw)
        await container.close()
        return [
          {
            id: 'P4',
            goal: 0.7,
            ratio: r.ratio,
            details: [
              `store():         substate ${fmt(r.candidate)} subjects/s (5 properties each), raw pipelined HSET ${fmt(r.baseline)} subjects/s, ratio ${r.ratio.toFixed(2)}`,
              `sets + store():  substate ${fmt(withSets.candidate)} subjects/s, raw ${fmt(withSets.baseline)} subjects/s, ratio ${withSets.ratio.toFixed(2)}`,
            ],
          },
        ]
      } finally {
        await sweep(client)
        client.disconnect()
      }
    },
  },
]
