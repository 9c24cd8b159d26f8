/**
 * P3: Redis write-through updater, `subject.set('n', (n = 0) => n + 1, { cache: false })`, awaited
 * one by one (one subject) and 50 in flight (50 subjects), on one ioredis client. Baseline: the
 * hand-written updater on raw ioredis — HGET the field, compute, EVALSHA a compare-and-set script
 * that writes only if the field still holds what was read, retry on conflict.
 * The summary ratio is the worse of the two.
 */
import { createContainer, type Subject } from '@substate/core'
import { createRedisStorage } from '@substate/storage-redis'
import { Redis } from 'ioredis'
import { type Benchmark, compare, fmt } from './harness.js'

const URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379'
const PREFIX = `substate-bench:p3:${process.pid}:`
const ONE_BY_ONE = 200
const IN_FLIGHT = 50

const CAS = `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if (v or '') ~= ARGV[2] then return {0, v} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return {1, v}`

/** The raw updater: read, compute, compare-and-set, retry. Resolves with the old value. */
function rawUpdater(client: Redis, sha: string) {
  return async (key: string, update: (n: number | undefined) => number): Promise<unknown> => {
    let raw = await client.hget(key, 'pn')
    for (;;) {
      const next = JSON.stringify(update(raw === null ? undefined : (JSON.parse(raw) as number)))
      const [ok, current] = (await client.evalsha(sha, 1, key, 'pn', raw ?? '', next)) as [
        number,
        string | null,
      ]
      if (ok === 1) return raw === null ? undefined : JSON.parse(raw)
      raw = current
    }
  }
}

const inc = (n: number | undefined = 0): number => n + 1

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
    id: 'P3',
    title: 'Redis write-through updater vs raw ioredis HGET + EVALSHA compare-and-set',
    async run() {
      const client = new Redis(URL, { maxRetriesPerRequest: 1 })
      try {
        await client.ping().catch((e: unknown) => {
          throw new Error(`P3 needs Redis at ${URL} (set REDIS_URL): ${String(e)}`)
        })
        const container = createContainer({
          storage: createRedisStorage({ client, prefix: PREFIX }),
        })
        const sha = (await client.script('LOAD', CAS)) as string
        const raw = rawUpdater(client, sha)

        const one: Subject = container.subject('one')
        const many: Subject[] = Array.from({ length: IN_FLIGHT }, (_, i) =>
          container.subject(`many:${i}`),
        )
        const rawMany = Array.from({ length: IN_FLIGHT }, (_, i) => `s:${PREFIX}raw-many:${i}`)

        const sequential = await compare(
          async () => {
            for (let i = 0; i < ONE_BY_ONE; i++) await one.set('n', inc, { cache: false })
            return ONE_BY_ONE
          },
          async () => {
            for (let i = 0; i < ONE_BY_ONE; i++) await raw(`s:${PREFIX}raw-one`, inc)
            return ONE_BY_ONE
          },
        )
        const concurrent = await compare(
          async () => {
            await Promise.all(many.map((s) => s.set('n', inc, { cache: false })))
            return IN_FLIGHT
          },
          async () => {
            await Promise.all(rawMany.map((k) => raw(k, inc)))
            return IN_FLIGHT
          },
        )
        await container.close()
        return [
          {
            id: 'P3',
            goal: 0.8,
            ratio: Math.min(sequential.ratio, concurrent.ratio),
            details: [
              `one by one:   substate ${fmt(sequential.candidate)} updates/s, raw ${fmt(sequential.baseline)} updates/s, ratio ${sequential.ratio.toFixed(2)}`,
              `50 in flight: substate ${fmt(concurrent.candidate)} updates/s, raw ${fmt(concurrent.baseline)} updates/s, ratio ${concurrent.ratio.toFixed(2)}`,
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
