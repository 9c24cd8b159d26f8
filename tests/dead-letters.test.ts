/**
 * Durable dead-letter sinks on real services: `storageDeadLetters` on memory, Redis and
 * PostgreSQL (entries shared by every process on the storage, redriven once), and
 * `pubsubDeadLetters` on the emulator (entries published to a topic, read back and redriven).
 */
import {
  createContainer,
  createMemoryStorage,
  DEAD_LETTERS,
  type ListableDeadLetterSink,
  redrive,
  redrivenEvent,
  type SubjectStorage,
  storageDeadLetters,
} from '@substate/core'
import { pubsubDeadLetters, readPubsubDeadLetter } from '@substate/pubsub'
import { createPostgresStorage } from '@substate/storage-postgres'
import { createRedisStorage } from '@substate/storage-redis'
import { createEmulatorClient } from '@substate/test-support/pubsub-client'
import { createEmulatorTopic } from '@substate/test-support/pubsub-emulator'
import { databaseUrl, describeWith, redisUrl } from '@substate/test-support/services'
import { Redis } from 'ioredis'
import pg from 'pg'
import { afterEach, describe, expect, it } from 'vitest'

const cleanup: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn().catch(() => {})
})

/** A billing handler failing until `healthy`. */
function app(
  storage: SubjectStorage,
  deadLetter: ListableDeadLetterSink | ReturnType<typeof pubsubDeadLetters>,
) {
  const c = createContainer({ storage, deadLetter })
  c.onError(() => {})
  const state = { healthy: false, billed: 0 }
  c.on('order.created', { name: 'billing' }, async (ctx) => {
    if (!state.healthy) throw new Error('payment gateway down')
    state.billed++
    await ctx.subject.set('billed', true)
  })
  return { c, state }
}

const event = (id: string, subject = 'order:1') => ({
  id,
  source: 'shop',
  type: 'order.created',
  subject,
  payload: { total: 12 },
})

/** `storage()` is a storage on a connection of its own, as another process would have. */
async function storageSinkScenario(storage: () => SubjectStorage): Promise<void> {
  const sink = storageDeadLetters(storage())
  expect(sink.durable).toBe(true)
  const { c, state } = app(storage(), sink)
  // Durable: the failure counts as handled (acknowledged); the entry is in the storage.
  expect((await c.receive(event('e1'))).status).toBe('handled')
  expect((await c.receive(event('e2', 'order:2'))).status).toBe('handled')
  const other = storageDeadLetters(storage())
  const listed = await other.list()
  expect(listed.map((e) => e.event.id).sort()).toEqual(['e1', 'e2'])
  const first = listed.find((e) => e.event.id === 'e1')!
  expect(first).toMatchObject({ handler: 'billing', event: { payload: { total: 12 } } })
  expect((first.error.cause as Error).message).toBe('payment gateway down')

  // Redriven while still broken: dead-lettered again under the same id, as the redriven event.
  expect(await redrive(c, sink, [first.id])).toMatchObject([{ id: first.id, status: 'handled' }])
  const replaced = (await sink.list({ subject: 'order:1' }))[0]!
  expect(replaced.id).toBe(first.id)
  expect(replaced.event.id).toBe(`e1~redrive-${first.at}`)
  expect(await other.list()).toHaveLength(2)

  // Fixed: both handled and removed; a stale entry redriven again is a duplicate.
  state.healthy = true
  const done = await redrive(c, sink, await sink.list())
  expect(done.map((r) => r.status)).toEqual(['handled', 'handled'])
  expect(state.billed).toBe(2)
  expect(await other.list()).toEqual([])
  expect(await redrive(c, sink, [replaced])).toMatchObject([{ status: 'duplicate' }])
  expect(await redrive(c, sink, ['gone'])).toMatchObject([{ id: 'gone', status: 'missing' }])
  expect(state.billed).toBe(2)
  expect(await c.subject('order:1').get('billed')).toBe(true)
  await c.close()
}

describe('storageDeadLetters on the memory storage', () => {
  it('keeps entries durably; redrive hands them back to receive once', async () => {
    const shared = createMemoryStorage()
    await storageSinkScenario(() => ({ ...shared, close: async () => {} }))
    expect((await shared.load(DEAD_LETTERS)).ext).toEqual({})
  })
})

describeWith('redis', 'storageDeadLetters on Redis', () => {
  it('keeps entries durably; redrive hands them back to receive once', async () => {
    const prefix = `dl-test-${process.pid}-${Date.now().toString(36)}:`
    const clients: Redis[] = []
    cleanup.push(async () => {
      const admin = new Redis(redisUrl!)
      const keys = [...(await admin.keys(`s:${prefix}*`)), ...(await admin.keys(`i:${prefix}*`))]
      if (keys.length > 0) await admin.del(...keys)
      admin.disconnect()
      for (const c of clients) c.disconnect()
    })
    await storageSinkScenario(() => {
      const client = new Redis(redisUrl!)
      clients.push(client)
      return createRedisStorage({ client, prefix })
    })
  })
})

describeWith('postgres', 'storageDeadLetters on PostgreSQL', () => {
  it('keeps entries durably; redrive hands them back to receive once', async () => {
    const table = `dl_test_${process.pid}_${Date.now().toString(36)}`
    const pools: pg.Pool[] = []
    cleanup.push(async () => {
      for (const p of pools) await p.end()
      const admin = new pg.Pool({ connectionString: databaseUrl!, max: 1 })
      await admin.query(`DROP TABLE IF EXISTS "${table}", "${table}_applied"`)
      await admin.end()
    })
    await storageSinkScenario(() => {
      const pool = new pg.Pool({ connectionString: databaseUrl!, max: 2 })
      pools.push(pool)
      return createPostgresStorage({ pool, table })
    })
  })
})

describeWith('pubsub', 'pubsubDeadLetters on the emulator', () => {
  it('publishes entries to the topic, read back from a subscription and redriven', async () => {
    const fixture = await createEmulatorTopic({ prefix: 'dl' })
    const client = createEmulatorClient()
    cleanup.push(
      () => fixture.delete(),
      () => client.close(),
    )
    const sink = pubsubDeadLetters({ client, topic: fixture.topic })
    expect(sink.durable).toBe(true)
    const { c, state } = app(createMemoryStorage(), sink)
    expect((await c.receive(event('p1'))).status).toBe('handled')

    const messages = []
    for (let t = 0; t < 200 && messages.length === 0; t++) {
      messages.push(...(await fixture.pull()))
      if (messages.length === 0) await new Promise((r) => setTimeout(r, 50))
    }
    expect(messages).toHaveLength(1)
    const m = messages[0]!
    expect(m.attributes).toMatchObject({
      'substate-dead-letter': 'billing|shop|p1',
      handler: 'billing',
      'ce-type': 'order.created',
      'ce-subject': 'order:1',
    })
    const entry = readPubsubDeadLetter(m)
    expect(entry).toMatchObject({
      id: 'billing|shop|p1',
      event: { id: 'p1', payload: { total: 12 } },
    })

    state.healthy = true
    expect((await c.receive(redrivenEvent(entry))).status).toBe('handled')
    expect(state.billed).toBe(1)
    await c.close()
  })

  it('a publish that fails is not durable: the event is not acknowledged', async () => {
    const client = createEmulatorClient()
    cleanup.push(() => client.close())
    const sink = pubsubDeadLetters({ client, topic: 'no-such-topic-dl', timeout: 5_000 })
    const { c } = app(createMemoryStorage(), sink)
    expect((await c.receive(event('p2'))).status).toBe('failed')
    await c.close()
  })
})
