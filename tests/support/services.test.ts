import { Redis } from 'ioredis'
import pg from 'pg'
import { expect, it } from 'vitest'
import { createEmulatorTopic, uniqueName } from './pubsub-emulator.js'
import { databaseUrl, describeWith, redisUrl, services } from './services.js'

// The global setup's own checks: each service it reports answers a real client, and the
// environment variables that adapter tests read reach the workers.

describeWith('redis', 'test services: redis', () => {
  it('answers PING at REDIS_URL', async () => {
    expect(process.env.REDIS_URL).toBeTruthy()
    const client = new Redis(redisUrl!, { lazyConnect: true, maxRetriesPerRequest: 1 })
    try {
      await client.connect()
      expect(await client.ping()).toBe('PONG')
    } finally {
      client.disconnect()
    }
  })
})

describeWith('postgres', 'test services: postgres', () => {
  it('connects to database test at DATABASE_URL', async () => {
    expect(process.env.DATABASE_URL).toBeTruthy()
    const client = new pg.Client({ connectionString: databaseUrl })
    await client.connect()
    try {
      const { rows } = await client.query<{ db: string }>('select current_database() as db')
      expect(rows[0]?.db).toBe('test')
    } finally {
      await client.end()
    }
  })
})

describeWith('pubsub', 'test services: pubsub emulator', () => {
  it('round-trips a message through a fresh topic and subscription', async () => {
    expect(process.env.PUBSUB_EMULATOR_HOST).toBe(services.pubsub)
    const fixture = await createEmulatorTopic({ ordering: true })
    try {
      const ids = await fixture.publish({
        data: '{"n":1}',
        attributes: { 'ce-type': 'test.ping' },
        orderingKey: 'device:1',
      })
      expect(ids).toHaveLength(1)
      const received = await fixture.pull()
      expect(received).toMatchObject([
        { data: '{"n":1}', attributes: { 'ce-type': 'test.ping' }, messageId: ids[0] },
      ])
      expect(await fixture.pull()).toEqual([])
    } finally {
      await fixture.delete()
    }
  })
})

it('makes valid, unique Pub/Sub names', () => {
  const names = new Set(Array.from({ length: 100 }, () => uniqueName('ab')))
  expect(names.size).toBe(100)
  for (const name of names) expect(name).toMatch(/^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$/)
  expect(() => uniqueName('goog')).toThrow(TypeError)
})
