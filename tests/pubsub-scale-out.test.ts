/**
 * Scale-out: three worker processes (tests/src/pubsub-worker.ts, compiled to tests/dist) share one
 * Pub/Sub subscription and one storage: Redis, and (for the kill test) PostgreSQL.
 *
 * - 10,000 counter increments, one worker killed with SIGKILL mid-run: the messages it held come
 *   back to the others once their lease expires, and those it had already stored but not acked
 *   are recognised by the storage's idempotency key. Every counter ends exact.
 * - Sequenced events on an ordered subscription: each subject's events are handled in publish
 *   order although three processes share the subscription (the ordering key pins a subject to one
 *   stream at a time).
 *
 * The kill runs on a subscription without message ordering: the emulator (0.8.x) does not
 * redeliver the backlog of ordering keys that were assigned to a stream killed mid-run (real
 * Pub/Sub does), so ordered keys of the dead worker would stall there.
 */
import { type ChildProcess, fork } from 'node:child_process'
import { existsSync, statSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { PubSub } from '@google-cloud/pubsub'
import { createContainer, type SubjectStorage } from '@substate/core'
import { healthOf } from '@substate/example-device-health/rules'
import { pubsubPublisher } from '@substate/pubsub'
import { createPostgresStorage } from '@substate/storage-postgres'
import { createRedisStorage } from '@substate/storage-redis'
import { createEmulatorClient } from '@substate/test-support/pubsub-client'
import {
  createEmulatorTopic,
  type EmulatorTopic,
  PUBSUB_PROJECT_ID,
} from '@substate/test-support/pubsub-emulator'
import {
  databaseUrl,
  describeWith,
  pubsubEmulatorHost,
  redisUrl,
  services,
} from '@substate/test-support/services'
import { Redis } from 'ioredis'
import pg from 'pg'
import { afterEach, expect, it } from 'vitest'

const WORKER = fileURLToPath(new URL('./dist/pubsub-worker.js', import.meta.url))
const SOURCE = fileURLToPath(new URL('./src/pubsub-worker.ts', import.meta.url))

interface Report {
  pid: number
  handled: number
  received: number
  acked: number
  nacked: number
  inflight: number
}

const cleanup: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn().catch(() => {})
})

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function until(
  cond: () => boolean | Promise<boolean>,
  ms: number,
  what: string,
  state: () => unknown = () => '',
) {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end)
      throw new Error(`timed out waiting for ${what}: ${JSON.stringify(await state())}`)
    await sleep(50)
  }
}

interface Cluster {
  fixture: EmulatorTopic
  client: PubSub
  storage: SubjectStorage
  workers: ChildProcess[]
  reports: Map<number, Report>
  total(key: keyof Report): number
  /** Emits `count` events through a route to the topic, as a front service would. */
  publish(events: Array<[type: string, subject: string, payload?: unknown]>): Promise<void>
  /** SIGTERMs the live workers and resolves with their exit codes. */
  stop(): Promise<Array<number | null>>
}

async function cluster(ordering: boolean, backend: 'redis' | 'postgres'): Promise<Cluster> {
  if (!existsSync(WORKER) || statSync(WORKER).mtimeMs < statSync(SOURCE).mtimeMs)
    throw new Error(`${WORKER} is missing or stale: run \`npx tsc -b\` (\`pnpm test\` does)`)
  const fixture = await createEmulatorTopic({ prefix: 'scale', ordering })
  const client = createEmulatorClient()
  const id = `${process.pid}_${Math.random().toString(36).slice(2, 8)}`
  cleanup.push(
    () => fixture.delete(),
    () => client.close(),
  )
  // A Redis prefix, or a PostgreSQL table (created by the workers' storages).
  let prefix: string
  let storage: SubjectStorage
  let storageEnv: Record<string, string>
  if (backend === 'redis') {
    const redis = new Redis(redisUrl!)
    prefix = `pubsub-scale-${id}:`
    storage = createRedisStorage({ client: redis, prefix })
    storageEnv = { REDIS_URL: redisUrl! }
    cleanup.push(async () => {
      const keys = await redis.keys(`s:${prefix}*`)
      if (keys.length > 0) await redis.del(...keys)
      redis.disconnect()
    })
  } else {
    const pool = new pg.Pool({ connectionString: databaseUrl!, max: 2 })
    prefix = `pubsub_scale_${id}`
    storage = createPostgresStorage({ pool, table: prefix })
    storageEnv = { DATABASE_URL: databaseUrl! }
    cleanup.push(async () => {
      await pool.query(`DROP TABLE IF EXISTS "${prefix}", "${prefix}_applied"`)
      await pool.end()
    })
  }
  const reports = new Map<number, Report>()
  const spawn = (): Promise<ChildProcess> =>
    new Promise((resolve, reject) => {
      const child = fork(WORKER, [], {
        env: {
          ...withoutStorageUrls(process.env),
          ...storageEnv,
          PUBSUB_EMULATOR_HOST: pubsubEmulatorHost!,
          PUBSUB_PROJECT: PUBSUB_PROJECT_ID,
          SUBSCRIPTION: fixture.subscription,
          PREFIX: prefix,
        },
        // Plain node on the compiled JS: not the test runner's flags or source conditions.
        execArgv: [],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      })
      cleanup.push(async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      })
      child.on('message', (m: Report & { ready?: boolean }) => {
        if (m.ready) resolve(child)
        else reports.set(m.pid, m)
      })
      child.once('error', reject)
      child.once('exit', (code) => reject(new Error(`worker exited early (${code})`)))
    })
  const workers = await Promise.all([spawn(), spawn(), spawn()])
  const front = createContainer({ source: 'front' })
  front.route('**', pubsubPublisher({ client, topic: fixture.topic }), { policy: 'direct' })
  cleanup.push(() => front.close())
  return {
    fixture,
    client,
    storage,
    workers,
    reports,
    total: (key) => [...reports.values()].reduce((sum, r) => sum + (r[key] as number), 0),
    async publish(events) {
      const sent = await Promise.all(events.map(([t, s, p]) => front.emit(t, s, p)))
      expect(sent.every((r) => r.ok)).toBe(true)
    },
    async stop() {
      const live = workers.filter((w) => w.exitCode === null && w.signalCode === null)
      const exits = live.map(
        (w) => new Promise<number | null>((resolve) => w.once('exit', (code) => resolve(code))),
      )
      for (const w of live) w.kill('SIGTERM')
      return Promise.all(exits)
    },
  }
}

/** Child processes get only the storage URL of their backend. */
function withoutStorageUrls(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { REDIS_URL: _r, DATABASE_URL: _d, ...rest } = env
  return rest
}

/**
 * `events` increments over 50 counters through three workers on `backend`; one worker is killed
 * with SIGKILL once 30 % are handled. Every counter must end exact.
 */
async function killOneWorker(backend: 'redis' | 'postgres', EVENTS: number): Promise<void> {
  const COUNTERS = 50
  const c = await cluster(false, backend)
  const t0 = performance.now()
  await c.publish(
    Array.from({ length: EVENTS }, (_, i) => ['count.inc', `counter:${i % COUNTERS}`] as const),
  )

  const [victim, ...survivors] = c.workers
  await until(() => c.total('handled') >= EVENTS * 0.3, 60_000, '30 % handled')
  victim!.kill('SIGKILL')
  const killedAt = Date.now()
  const killedHandled = c.reports.get(victim!.pid!)?.handled ?? 0
  expect(killedHandled).toBeGreaterThan(0)

  const counts = () =>
    Promise.all(
      Array.from({ length: COUNTERS }, async (_, i) => {
        const found = await c.storage.get(`counter:${i}`, 'prop', 'count')
        return (found?.value as number | undefined) ?? 0
      }),
    )
  const state = async () => ({ counts: await counts(), workers: [...c.reports.values()] })
  const stored = async () => (await counts()).reduce((a, b) => a + b, 0) >= EVENTS
  await until(stored, 90_000, 'all increments stored', state)
  const seconds = (performance.now() - t0) / 1000
  // Stays exact once the killed worker's leases expired and its messages were redelivered.
  await until(() => Date.now() - killedAt > 12_000, 30_000, 'the leases to expire')
  const idle = () => survivors.every((w) => (c.reports.get(w.pid!)?.inflight ?? 0) === 0)
  await until(idle, 30_000, 'the survivors to go idle', state)
  await sleep(1_000)
  expect(await counts()).toEqual(Array.from({ length: COUNTERS }, () => EVENTS / COUNTERS))

  expect(await c.stop()).toEqual([0, 0]) // the survivors drain and exit cleanly
  const bySurvivors = survivors.reduce((s, w) => s + (c.reports.get(w.pid!)?.handled ?? 0), 0)
  console.log(
    `[scale-out, ${backend}] ${EVENTS} events stored in ${seconds.toFixed(1)} s with a SIGKILL ` +
      `(${Math.round(EVENTS / seconds)}/s end to end); killed worker handled ${killedHandled}, ` +
      `survivors ${bySurvivors} (redeliveries that ran again were stored once)`,
  )
}

const needs = services.pubsub === null ? 'pubsub' : 'redis'

describeWith(needs, 'pubsub scale-out (3 worker processes, emulator, Redis)', () => {
  it('10,000 increments, one worker SIGKILLed mid-run: every counter exact', async () => {
    await killOneWorker('redis', 10_000)
  }, 150_000)

  it('600 metric events for 10 devices over one unordered subscription: every stored health follows from the stored metrics', async () => {
    const c = await cluster(false, 'redis')
    let seed = 5
    const rnd = () => {
      seed = (seed * 1664525 + 1013904223) >>> 0
      return seed / 2 ** 32
    }
    const events = Array.from({ length: 600 }, (_, i) => {
      const payload: Record<string, number> = {}
      if (rnd() < 0.6) payload.cpu = Math.floor(rnd() * 100)
      if (rnd() < 0.6) payload.memory = Math.floor(rnd() * 100)
      if (rnd() < 0.3) payload.error_rate = Math.floor(rnd() * 15)
      return ['device.metrics', `device:${i % 10}`, payload] as [string, string, unknown]
    })
    await c.publish(events)
    const state = async () => ({ workers: [...c.reports.values()] })
    await until(() => c.total('acked') >= 600, 90_000, 'every event acknowledged', state)
    await until(() => c.total('inflight') === 0, 30_000, 'the workers to go idle', state)
    for (let d = 0; d < 10; d++) {
      const { props } = await c.storage.load(`device:${d}`)
      const metrics = {
        cpu: (props.cpu as number | undefined) ?? 0,
        memory: (props.memory as number | undefined) ?? 0,
        error_rate: (props.error_rate as number | undefined) ?? 0,
      }
      expect({ device: d, health: props.health }).toEqual({ device: d, health: healthOf(metrics) })
    }
    expect(await c.stop()).toEqual([0, 0, 0])
  }, 150_000)

  it('ordered subscription: each subject’s events are handled in order across processes', async () => {
    const EVENTS = 3_000
    const SUBJECTS = 30
    const c = await cluster(true, 'redis')
    await c.publish(
      Array.from(
        { length: EVENTS },
        (_, k) => ['seq', `seq:${k % SUBJECTS}`, { i: Math.floor(k / SUBJECTS) }] as const,
      ),
    )
    const state = async () => ({ workers: [...c.reports.values()] })
    await until(() => c.total('handled') >= EVENTS, 60_000, 'every event handled', state)
    const perWorker = c.workers.map((w) => c.reports.get(w.pid!)?.handled ?? 0)
    expect(perWorker.filter((n) => n > 0).length).toBeGreaterThan(1) // the work was shared
    for (let s = 0; s < SUBJECTS; s++) {
      const { props } = await c.storage.load(`seq:${s}`)
      expect(props).toEqual({ last: EVENTS / SUBJECTS - 1 }) // no `disorder`
    }
    expect(await c.stop()).toEqual([0, 0, 0])
  }, 90_000)
})

describeWith(
  services.pubsub === null ? 'pubsub' : 'postgres',
  'pubsub scale-out (3 worker processes, emulator, PostgreSQL)',
  () => {
    it('3,000 increments, one worker SIGKILLed mid-run: every counter exact', async () => {
      await killOneWorker('postgres', 3_000)
    }, 150_000)
  },
)
