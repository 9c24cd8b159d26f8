/**
 * Fault injection on storage: the application (a child process, `tests/src/fault-worker.ts`) takes
 * HTTP load from retrying senders while its private Redis is SIGKILLed and restarted, or its
 * private PostgreSQL is stopped with `-m immediate` and restarted. Afterwards every event was
 * acknowledged, every counter is exact (no loss: no 2xx for unstored work; no double effect:
 * retried events are applied once), and the process never restarted. Prints the recovery time.
 */
import { existsSync, statSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { SubjectStorage } from '@substate/core'
import { createPostgresStorage } from '@substate/storage-postgres'
import { createRedisStorage } from '@substate/storage-redis'
import { type App, type LoadEvent, sendEvents, startApp, until } from '@substate/test-support/load'
import {
  type PrivateService,
  requireProgram,
  startPrivatePostgres,
  startPrivateRedis,
} from '@substate/test-support/private-services'
import { Redis } from 'ioredis'
import pg from 'pg'
import { afterEach, expect, it } from 'vitest'

const WORKER = fileURLToPath(new URL('../dist/fault-worker.js', import.meta.url))
const SOURCE = fileURLToPath(new URL('../src/fault-worker.ts', import.meta.url))

const cleanup: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn().catch(() => {})
})

function worker(env: Record<string, string>): Promise<App> {
  if (!existsSync(WORKER) || statSync(WORKER).mtimeMs < statSync(SOURCE).mtimeMs)
    throw new Error(`${WORKER} is missing or stale: run \`npx tsc -b\` (\`pnpm test\` does)`)
  // Not the shared services: only what the test gives it.
  const { REDIS_URL: _r, DATABASE_URL: _d, ...rest } = process.env
  void _r
  void _d
  return startApp(WORKER, { ...(rest as Record<string, string>), ...env })
}

async function readyz(app: App): Promise<number> {
  // A dead app must fail the test now, with its last words, not at a timeout.
  if (app.exits.length > 0)
    throw new Error(`the app process exited:\n${app.output().slice(-3_000)}`)
  try {
    return (await fetch(`${app.url}/readyz`, { signal: AbortSignal.timeout(5_000) })).status
  } catch {
    return 0
  }
}

const EVENTS = 300
const SUBJECTS = 10
const events: LoadEvent[] = Array.from({ length: EVENTS }, (_, i) => ({
  id: `inc-${i}`,
  type: 'count.inc',
  subject: `device:${i % SUBJECTS}`,
}))

/**
 * Runs the load and crashes the service twice, once a third and once two thirds of the events
 * were acknowledged: each time it stays down for `downMs` (`/readyz` must turn 503), is restarted,
 * and must recover on its own (`/readyz` 200 again). Then checks the outcome.
 */
async function crashUnderLoad(
  service: PrivateService,
  app: App,
  storage: () => SubjectStorage,
  label: string,
  downMs = 1_500,
): Promise<void> {
  // More senders than pooled connections: at the crash, connections are checked out mid-unit.
  const load = sendEvents(app.url, events, { concurrency: 16, deadline: 90_000 })
  cleanup.push(async () => load.stop())
  // Fail at once when the app died, rather than at the senders' deadline.
  const died = new Promise<void>((resolve) => {
    if (app.exits.length > 0) resolve()
    else app.child.once('exit', () => resolve())
  })
  const lines: string[] = []
  let restartedAt = 0
  for (const share of [1 / 3, 2 / 3]) {
    await until(
      () => load.acked >= EVENTS * share,
      60_000,
      `${Math.round(share * 100)}% of the events acknowledged`,
      () => ({ acked: load.acked, exits: app.exits }),
    )
    await service.kill()
    const killedAt = Date.now()
    // /readyz checks the storage: not ready while it is down.
    await until(
      async () => (await readyz(app)) === 503,
      15_000,
      '/readyz 503 while storage is down',
    )
    const noticed = Date.now() - killedAt
    await new Promise((r) => setTimeout(r, Math.max(0, killedAt + downMs - Date.now())))
    await service.start()
    restartedAt = Date.now()
    const ready = until(async () => (await readyz(app)) === 200, 60_000, '/readyz 200 again')
    const readyIn = await Promise.race([ready.then(() => Date.now() - restartedAt), died])
    expect(app.exits, `the app process exited:\n${app.output().slice(-3_000)}`).toEqual([])
    const acked = load.acked
    await Promise.race([
      until(() => load.acked > acked || load.acked === EVENTS, 60_000, 'a 2xx after the restart'),
      died,
    ])
    const firstAck = load.ackTimes.find((t) => t >= restartedAt)
    lines.push(
      `down ${restartedAt - killedAt} ms (/readyz 503 after ${noticed} ms), after the restart ` +
        `/readyz 200 in ${readyIn} ms, first 2xx in ${firstAck === undefined ? 'n/a' : `${firstAck - restartedAt} ms`}`,
    )
  }
  await Promise.race([load.done, died])
  load.stop()
  expect(app.exits, `the app process exited:\n${app.output().slice(-3_000)}`).toEqual([])
  await load.done
  console.log(
    `[faults] ${label}, twice: ${lines.join('; ')}. ${load.attempts} requests for ${EVENTS} events; ` +
      `non-2xx ${JSON.stringify(Object.fromEntries(load.failures))}`,
  )
  expect(load.acked).toBe(EVENTS)
  expect(load.doubleAcks).toEqual([])
  // Every counter exact, read from the storage itself: no acknowledged event lost, none twice.
  const store = storage()
  let total = 0
  for (let s = 0; s < SUBJECTS; s++) {
    const { props } = await store.load(`device:${s}`)
    expect(props.count, `device:${s}`).toBe(EVENTS / SUBJECTS)
    total += props.count as number
  }
  expect(total).toBe(EVENTS)
  // And the app still serves.
  expect((await fetch(`${app.url}/healthz`)).status).toBe(200)
}

it('Redis killed (SIGKILL) and restarted under HTTP load: all acknowledged, counters exact, no restart', async (ctx) => {
  requireProgram('redis-server', ctx)
  const redis = await startPrivateRedis()
  cleanup.push(() => redis.dispose())
  const prefix = `faults-${process.pid}:`
  const app = await worker({ BACKEND: 'redis', URL: redis.url, PREFIX: prefix })
  cleanup.push(() => app.stop())
  await crashUnderLoad(
    redis,
    app,
    () => {
      const client = new Redis(redis.url)
      cleanup.push(async () => client.disconnect())
      return createRedisStorage({ client, prefix })
    },
    'redis SIGKILL',
  )
}, 120_000)

// KNOWN FAILING until the storage-postgres fix for issue 12 (finding 1) is merged: a connection
// lost mid-query emits 'error' on a checked-out pg.Client and the app process dies. This test
// asserts the right behaviour (the app survives, in-flight units answer 5xx, it recovers alone).
it('PostgreSQL stopped with -m immediate and restarted under HTTP load: all acknowledged, counters exact, no restart [fails until storage-postgres survives lost connections]', async (ctx) => {
  requireProgram('initdb', ctx)
  const postgres = await startPrivatePostgres()
  cleanup.push(() => postgres.dispose())
  const table = `faults_${process.pid}`
  const app = await worker({ BACKEND: 'postgres', URL: postgres.url, PREFIX: table })
  cleanup.push(() => app.stop())
  await crashUnderLoad(
    postgres,
    app,
    () => {
      const pool = new pg.Pool({ connectionString: postgres.url, max: 2 })
      pool.on('error', () => {})
      cleanup.push(() => pool.end())
      return createPostgresStorage({ pool, table })
    },
    'postgres stop -m immediate',
  )
}, 120_000)
