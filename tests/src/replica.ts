/**
 * A replica process for `tests/scale-out.test.ts`: the device-health rules and a bank-transfer
 * rule in one container on Redis or PostgreSQL, behind its own HTTP receiver on a free port.
 * Sends `{ url }` over IPC once it listens; on the message `stop` it drains and exits.
 *
 * Environment: BACKEND (`redis` | `postgres`), URL, NAMESPACE (a Redis prefix or a table);
 * SINK (optional): a URL that `alert.*` events are routed to (the outbox tests), with
 * OUTBOX_LEASE ms (default 30 s).
 * @module
 */
import type { AddressInfo } from 'node:net'
import { serve } from '@hono/node-server'
import { httpEmitter } from '@substate/cloudevents'
import { createContainer, type SubjectStorage } from '@substate/core'
import { deviceHealthRules } from '@substate/example-device-health/rules'
import { createReceiver } from '@substate/hono'
import { createPostgresStorage } from '@substate/storage-postgres'
import { createRedisStorage } from '@substate/storage-redis'
import { Redis } from 'ioredis'
import pg from 'pg'

const env = (name: string): string => {
  const v = process.env[name]
  if (!v) throw new Error(`replica: ${name} is not set`)
  return v
}

let storage: SubjectStorage
let release: () => Promise<unknown>
if (env('BACKEND') === 'redis') {
  const client = new Redis(env('URL'))
  storage = createRedisStorage({ client, prefix: env('NAMESPACE') })
  release = () => client.quit()
} else {
  const pool = new pg.Pool({ connectionString: env('URL'), max: 4 })
  pool.on('error', () => {}) // an idle connection lost: the storage reports what it affects
  storage = createPostgresStorage({ pool, table: env('NAMESPACE') })
  release = () => pool.end()
}
// Replicas of one service: one source, so the ids their units derive agree.
const lease = Number(process.env.OUTBOX_LEASE ?? 30_000)
const container = createContainer({
  storage,
  source: 'scale-out',
  outbox: { lease, poll: Math.min(lease, 1000) / 4 },
})
container.onError(() => {}) // failures answer 500; the sender retries
deviceHealthRules(container, () => {})

/** A transfer reads both balances, then writes both: plain get/set, no updaters. */
container.on('transfer', async (ctx) => {
  const { from, to, amount } = ctx.payload as { from: string; to: string; amount: number }
  const a = container.subject(from)
  const b = container.subject(to)
  const balanceA = await a.get<number>('balance', { default: 0 })
  const balanceB = await b.get<number>('balance', { default: 0 })
  if (balanceA < amount) {
    await ctx.subject.set('refused', true)
    return
  }
  await a.set('balance', balanceA - amount)
  await b.set('balance', balanceB + amount)
  await ctx.subject.set('done', true)
})

if (process.env.SINK) {
  container.route('alert.*', httpEmitter({ url: process.env.SINK, retries: 0, timeout: 120_000 }), {
    policy: 'direct',
  })
  // A reading stores its value and raises an alert; the second handler fails on the first try
  // of every event, so each unit runs (and is acknowledged) only on its redelivery.
  const failed = new Set<string>()
  container.on('reading', async (ctx) => {
    await ctx.subject.set('value', ctx.payload as number)
    await ctx.emit('alert.high', { value: ctx.payload })
  })
  container.on('reading', (ctx) => {
    if (process.env.FAIL_FIRST && !failed.has(ctx.id)) {
      failed.add(ctx.id)
      throw new Error('fails on the first delivery')
    }
  })
}

const app = createReceiver(container)
await container.start() // relays what the storage's outbox holds (a crashed replica's sends)
const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => {
  const { port } = server.address() as AddressInfo
  process.send?.({ url: `http://127.0.0.1:${port}/` })
})
process.on('message', (m) => {
  if (m !== 'stop') return
  void (async () => {
    await container.close()
    server.close()
    await release()
    process.exit(0)
  })()
})
