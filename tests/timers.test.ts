/**
 * Durable subject timers on real shared storage: a timer survives the process that scheduled it
 * (closed before it was due, then fired by a replica started later, on a client or pool of its
 * own), and replicas racing for due timers fire each once.
 */
import { type Container, createContainer, type SubjectStorage } from '@substate/core'
import { createPostgresStorage } from '@substate/storage-postgres'
import { createRedisStorage } from '@substate/storage-redis'
import { databaseUrl, describeWith, redisUrl } from '@substate/test-support/services'
import { Redis } from 'ioredis'
import pg from 'pg'
import { afterEach, expect, it } from 'vitest'

const cleanup: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn().catch(() => {})
})
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** `storage()` makes a storage on a connection of its own, as another process would have. */
async function survivesRestartAndRaces(storage: () => SubjectStorage): Promise<void> {
  // Scheduled by a process that then stops before the timers are due.
  const first = createContainer({ storage: storage(), timers: { poll: 50 } })
  const handles = await Promise.all(
    Array.from({ length: 10 }, (_, k) =>
      first.subject(`device:${k}`).schedule('device.check', { in: 300 }, { k }),
    ),
  )
  await first.close()

  // Two replicas started later: between them, each timer fires exactly once.
  const fired: string[][] = [[], []]
  const replicas: Container[] = [0, 1].map((i) => {
    const c = createContainer({ storage: storage(), timers: { poll: 50 } })
    c.on('device.check', async (ctx) => {
      fired[i]!.push(ctx.id)
      await ctx.subject.set('checked', (ctx.payload as { k: number }).k)
    })
    return c
  })
  for (const c of replicas) await c.start()
  const reader = storage()
  const done = async () => fired.flat().length >= 10
  for (let t = 0; t < 400 && !(await done()); t++) await sleep(50) // a busy machine may be slow
  await sleep(200) // any second firing would show here
  const all = fired.flat()
  expect(all.sort()).toEqual(handles.map((h) => `timer:${h.id}`).sort())
  for (let k = 0; k < 10; k++) {
    expect(await reader.get(`device:${k}`, 'prop', 'checked')).toEqual({ value: k })
  }
  // Each fired timer is deleted once its unit is stored (waited for: the machine may be busy).
  for (
    let t = 0;
    t < 200 && Object.keys((await reader.load('substate:timers')).props).length > 0;
    t++
  )
    await sleep(50)
  expect((await reader.load('substate:timers')).props).toEqual({})
  for (const c of replicas) await c.close()
}

describeWith('redis', 'durable timers on Redis', () => {
  it('survive the process that scheduled them and fire once across replicas', async () => {
    const prefix = `timers-test-${process.pid}-${Date.now().toString(36)}:`
    const clients: Redis[] = []
    cleanup.push(async () => {
      const admin = new Redis(redisUrl!)
      const keys = [...(await admin.keys(`s:${prefix}*`)), ...(await admin.keys(`i:${prefix}*`))]
      if (keys.length > 0) await admin.del(...keys)
      admin.disconnect()
      for (const c of clients) c.disconnect()
    })
    await survivesRestartAndRaces(() => {
      const client = new Redis(redisUrl!)
      clients.push(client)
      return createRedisStorage({ client, prefix })
    })
  })
})

describeWith('postgres', 'durable timers on PostgreSQL', () => {
  it('survive the process that scheduled them and fire once across replicas', async () => {
    const table = `timers_test_${process.pid}_${Date.now().toString(36)}`
    const pools: pg.Pool[] = []
    cleanup.push(async () => {
      const admin = new pg.Pool({ connectionString: databaseUrl!, max: 1 })
      await admin.query(`DROP TABLE IF EXISTS "${table}", "${table}_applied"`)
      await admin.end()
      for (const p of pools) await p.end()
    })
    await survivesRestartAndRaces(() => {
      const pool = new pg.Pool({ connectionString: databaseUrl!, max: 2 })
      pools.push(pool)
      return createPostgresStorage({ pool, table })
    })
  })
})
