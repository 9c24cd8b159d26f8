/**
 * The application under fault injection (`tests/faults/`): one container behind the HTTP receiver
 * on 127.0.0.1 (a free port), on Redis, PostgreSQL or in-memory storage, optionally fed by a
 * Pub/Sub subscription too. Each `count.inc` event increments the `count` of its subject in the
 * event's unit of work. `/readyz` includes the subscriber's readiness.
 *
 * Says `{ ready, port, pid }` over IPC once it serves; drains and exits on SIGTERM. It installs no
 * `uncaughtException` handler on purpose: a fault that kills the process must show as an exit.
 *
 * Environment: BACKEND (`redis` | `postgres` | `memory`), URL (Redis or PostgreSQL), PREFIX (a
 * Redis prefix or a PostgreSQL table), and for Pub/Sub PUBSUB_EMULATOR_HOST, PUBSUB_PROJECT,
 * SUBSCRIPTION.
 * @module
 */
import type { AddressInfo } from 'node:net'
import { PubSub } from '@google-cloud/pubsub'
import { serve } from '@hono/node-server'
import { createContainer, type SubjectStorage } from '@substate/core'
import { createReceiver } from '@substate/hono'
import { type PubsubSubscriber, pubsubSubscriber } from '@substate/pubsub'
import { createPostgresStorage } from '@substate/storage-postgres'
import { createRedisStorage } from '@substate/storage-redis'
import { Redis } from 'ioredis'
import pg from 'pg'

const env = (name: string): string => {
  const v = process.env[name]
  if (!v) throw new Error(`fault-worker: ${name} is not set`)
  return v
}
const log = (line: string): void => {
  process.stderr.write(`[fault-worker ${process.pid}] ${line}\n`)
}

let storage: SubjectStorage | undefined
let release: () => Promise<unknown> = async () => {}
const backend = env('BACKEND')
if (backend === 'redis') {
  const client = new Redis(env('URL'))
  client.on('error', (e: Error) => log(`redis: ${e.message}`))
  storage = createRedisStorage({ client, prefix: env('PREFIX') })
  release = async () => client.disconnect()
} else if (backend === 'postgres') {
  const pool = new pg.Pool({ connectionString: env('URL'), max: 8 })
  // An idle client losing its connection is reported here; without a listener it kills Node.
  pool.on('error', (e: Error) => log(`pg pool: ${e.message}`))
  storage = createPostgresStorage({ pool, table: env('PREFIX') })
  release = () => pool.end()
}

const container = createContainer({ source: 'fault-worker', ...(storage ? { storage } : {}) })
container.onError((f) => log(`handler: ${f.error.message}`))
container.on('count.inc', async (ctx) => {
  await ctx.subject.set('count', (n = 0) => n + 1)
})

let client: PubSub | undefined
let subscriber: PubsubSubscriber | undefined
if (process.env.SUBSCRIPTION) {
  client = new PubSub({
    projectId: env('PUBSUB_PROJECT'),
    apiEndpoint: env('PUBSUB_EMULATOR_HOST'),
    emulatorMode: true,
    universeDomain: 'googleapis.com',
  })
  subscriber = pubsubSubscriber(container, {
    client,
    subscriptions: env('SUBSCRIPTION'),
    concurrency: 50,
    reconnect: { min: 100, max: 1_000 },
    onError: (e) => log(`pubsub: ${e.message}`),
  })
}

const app = createReceiver(container, {
  readiness: {
    ...(subscriber ? { pubsub: () => subscriber.ready() } : {}),
    ...(storage ? { storage: () => storage.load('fault-worker:readyz').then(() => true) } : {}),
  },
  onError: (error, errorId, what) => log(`error ${errorId}: ${what}: ${(error as Error)?.message}`),
})
const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) => {
  process.send?.({ ready: true, port: (info as AddressInfo).port, pid: process.pid })
})

process.on('message', (m) => {
  if (m === 'stats') process.send?.({ stats: subscriber?.stats(), state: subscriber?.state() })
})
process.once('SIGTERM', () => {
  void (async () => {
    const report = await container.close({ drainTimeout: 5_000 })
    ;(server as { closeAllConnections?(): void }).closeAllConnections?.()
    server.close()
    await client?.close()
    await release()
    process.exitCode = report.errors.length === 0 ? 0 : 1
    process.disconnect?.()
  })()
})
