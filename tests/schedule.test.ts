/**
 * container.schedule across replicas on a real shared storage: two containers, each on a client
 * or pool of its own (as two processes would be), schedule the same job; every tick is handled by
 * exactly one of them, and what its handler cached is stored.
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

async function twoReplicas(storages: SubjectStorage[], reader: SubjectStorage): Promise<void> {
  const handled: string[][] = storages.map(() => [])
  const replicas: Container[] = storages.map((storage) => createContainer({ storage }))
  const stops = replicas.map((c, i) => {
    c.on('sweep', async (ctx) => {
      handled[i]!.push(ctx.id)
      await ctx.subject.set('runs', (n = 0) => n + 1)
    })
    return c.schedule('sweep', { every: 50 }, undefined, { subject: 'sweeper' })
  })
  await sleep(1_000)
  for (const stop of stops) stop()
  await sleep(200) // the last ticks finish and are stored
  // A tick's handler may run again when its unit conflicted with the other replica's (handlers
  // must be safe to re-run): what counts is that each tick's effect is stored exactly once.
  const all = new Set(handled.flat())
  expect(all.size).toBeGreaterThanOrEqual(12)
  expect(await reader.get('sweeper', 'prop', 'runs')).toEqual({ value: all.size })
  for (const c of replicas) await c.close()
}

describeWith('redis', 'schedule across replicas on Redis', () => {
  it('each tick runs once between two replicas on separate clients', async () => {
    const prefix = `schedule-test-${process.pid}-${Date.now().toString(36)}:`
    const clients = [new Redis(redisUrl!), new Redis(redisUrl!), new Redis(redisUrl!)]
    cleanup.push(async () => {
      const keys = await clients[2]!.keys(`s:${prefix}*`)
      if (keys.length > 0)
        await clients[2]!.del(...keys.concat(await clients[2]!.keys(`i:${prefix}*`)))
      for (const c of clients) c.disconnect()
    })
    const [a, b, reader] = clients.map((client) => createRedisStorage({ client, prefix }))
    await twoReplicas([a!, b!], reader!)
  })
})

describeWith('postgres', 'schedule across replicas on PostgreSQL', () => {
  it('each tick runs once between two replicas on separate pools', async () => {
    const table = `schedule_test_${process.pid}_${Date.now().toString(36)}`
    const pools = [0, 1, 2].map(() => new pg.Pool({ connectionString: databaseUrl!, max: 2 }))
    cleanup.push(async () => {
      await pools[2]!.query(`DROP TABLE IF EXISTS "${table}", "${table}_applied"`)
      for (const p of pools) await p.end()
    })
    const [a, b, reader] = pools.map((pool) => createPostgresStorage({ pool, table }))
    await twoReplicas([a!, b!], reader!)
  })
})
