/**
 * A scale-out worker for `tests/pubsub-scale-out.test.ts`: one container on a shared Redis or
 * PostgreSQL storage, fed by a Pub/Sub subscription shared with the other workers. Each `count.inc` event
 * increments the `count` of its subject; `seq` events (payload `{ i }`, 0, 1, 2... per subject)
 * record the last `i` and count those that arrive out of order in `disorder`. Reports its subscriber's counters to the parent over IPC
 * every 100 ms; exits cleanly (draining) on SIGTERM. It also runs the device-health rules
 * (`device.metrics` events).
 *
 * Environment: PUBSUB_EMULATOR_HOST, PUBSUB_PROJECT, SUBSCRIPTION, PREFIX (a Redis prefix or a
 * PostgreSQL table), and REDIS_URL or DATABASE_URL (PostgreSQL when set).
 * @module
 */
import { Duration, PubSub } from '@google-cloud/pubsub'
import { createContainer } from '@substate/core'
import { deviceHealthRules } from '@substate/example-device-health/rules'
import { pubsubSubscriber } from '@substate/pubsub'
import { createPostgresStorage } from '@substate/storage-postgres'
import { createRedisStorage } from '@substate/storage-redis'
import { Redis } from 'ioredis'
import pg from 'pg'

const env = (name: string): string => {
  const v = process.env[name]
  if (!v) throw new Error(`pubsub-worker: ${name} is not set`)
  return v
}

const databaseUrl = process.env.DATABASE_URL
const redis = databaseUrl ? undefined : new Redis(env('REDIS_URL'))
const pool = databaseUrl ? new pg.Pool({ connectionString: databaseUrl, max: 8 }) : undefined
const client = new PubSub({
  projectId: env('PUBSUB_PROJECT'),
  apiEndpoint: env('PUBSUB_EMULATOR_HOST'),
  emulatorMode: true,
  universeDomain: 'googleapis.com',
})
const container = createContainer({
  storage: pool
    ? createPostgresStorage({ pool, table: env('PREFIX') })
    : createRedisStorage({ client: redis!, prefix: env('PREFIX') }),
  source: `worker-${process.pid}`,
})
let handled = 0
container.on('count.inc', async (ctx) => {
  await ctx.subject.set('count', (n = 0) => n + 1)
  handled++
})
// Sequenced events: counts the ones that arrive out of order for their subject.
container.on('seq', async (ctx) => {
  const { i } = ctx.payload as { i: number }
  const last = await ctx.subject.get('last', { default: -1 })
  if (i !== last + 1) await ctx.subject.set('disorder', (n = 0) => n + 1)
  await ctx.subject.set('last', i)
  handled++
})
// The device-health rules (read-then-write: health from the stored metrics), for the invariant.
deviceHealthRules(container, () => {})
const subscriber = pubsubSubscriber(container, {
  client,
  subscriptions: env('SUBSCRIPTION'),
  concurrency: 200,
  // Short leases: messages held by a killed worker come back after ~10 s, not minutes.
  subscriberOptions: {
    minAckDeadline: Duration.from({ seconds: 10 }),
    maxAckDeadline: Duration.from({ seconds: 10 }),
  },
})

const report = (): void => {
  process.send?.({ pid: process.pid, handled, ...subscriber.stats() })
}
const timer = setInterval(report, 100)
process.send?.({ ready: true, pid: process.pid })

process.once('SIGTERM', () => {
  void (async () => {
    clearInterval(timer)
    const closed = await container.close({ drainTimeout: 5_000 })
    report()
    await client.close()
    redis?.disconnect()
    await pool?.end()
    process.exitCode = closed.errors.length === 0 ? 0 : 1
    process.disconnect?.()
  })()
})
