/**
 * No lost updates (DESIGN §3, guarantee 6) through real Redis and PostgreSQL servers: many
 * containers sharing one client or pool in this process, and several processes on one subject.
 */
import { fork } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { createContainer, type SubjectStorage } from '@substate/core'
import { createPostgresStorage } from '@substate/storage-postgres'
import { createRedisStorage } from '@substate/storage-redis'
import { databaseUrl, describeWith, redisUrl } from '@substate/test-support/services'
import { Redis } from 'ioredis'
import pg from 'pg'
import { afterAll, beforeAll, expect, it } from 'vitest'

const run = `${process.pid}_${Date.now().toString(36)}`
const WORKER = fileURLToPath(new URL('./dist/storage-worker.js', import.meta.url))

/** 8 containers, each with its own storage from `make`, each doing 25 increments at once. */
async function eightContainers(
  make: () => SubjectStorage,
  subject: string,
  mode: 'write-through' | 'cached',
): Promise<unknown> {
  const containers = Array.from({ length: 8 }, () => createContainer({ storage: make() }))
  await Promise.all(
    containers.map(async (c) => {
      const s = c.subject(subject)
      if (mode === 'write-through') {
        await Promise.all(
          Array.from({ length: 25 }, () => s.set('n', (n = 0) => n + 1, { cache: false })),
        )
      } else {
        await Promise.all(Array.from({ length: 25 }, () => s.set('n', (n = 0) => n + 1)))
        await s.store()
      }
    }),
  )
  for (const c of containers) await c.close()
  // A fresh container reads what storage holds, not a cache.
  const reader = createContainer({ storage: make() })
  const n = await reader.subject(subject).get('n')
  await reader.close()
  return n
}

/** Runs `workers` processes × `count` write-through increments of one subject. */
async function processes(
  env: Record<string, string>,
  workers: number,
  count: number,
): Promise<number[]> {
  if (!existsSync(WORKER)) throw new Error(`${WORKER} is missing: run \`pnpm exec tsc -b\` first`)
  const children = Array.from({ length: workers }, () =>
    fork(WORKER, {
      env: { ...process.env, ...env, COUNT: String(count) },
      // Not vitest's flags (its `@substate/source` condition would load .ts sources in plain node).
      execArgv: [],
      stdio: 'inherit',
    }),
  )
  const message = (child: (typeof children)[number], key: 'ready' | 'done') =>
    new Promise<{ olds?: number[]; error?: string }>((resolve, reject) => {
      const onMessage = (m: { ready?: boolean; done?: boolean; error?: string }) => {
        if (m.error) reject(new Error(`worker ${child.pid}: ${m.error}`))
        else if (m[key]) {
          child.off('message', onMessage)
          resolve(m)
        }
      }
      child.on('message', onMessage)
      child.once('exit', (code) => reject(new Error(`worker ${child.pid} exited with ${code}`)))
    })
  try {
    await Promise.all(children.map((c) => message(c, 'ready')))
    const done = children.map((c) => message(c, 'done'))
    for (const c of children) c.send('go')
    return (await Promise.all(done)).flatMap((m) => m.olds ?? [])
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill()
  }
}

const everyOldOnce = (olds: number[], total: number): void => {
  expect(olds.sort((a, b) => a - b)).toEqual(Array.from({ length: total }, (_, i) => i))
}

describeWith('redis', 'no lost updates through Redis', () => {
  const prefix = `substate-concurrency:${run}:`
  let client: Redis
  beforeAll(() => {
    client = new Redis(redisUrl!)
  })
  afterAll(async () => {
    let cursor = '0'
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `?:${prefix}*`, 'COUNT', 1000)
      cursor = next
      if (keys.length > 0) await client.del(...keys)
    } while (cursor !== '0')
    await client.quit()
  })

  it('8 containers on ONE shared ioredis client, 25 write-through increments each: 200', async () => {
    const make = () => createRedisStorage({ client, prefix })
    expect(await eightContainers(make, 'shared-client', 'write-through')).toBe(200)
  })

  it('8 containers on ONE shared ioredis client, 25 cached increments each, then store(): 200', async () => {
    const make = () => createRedisStorage({ client, prefix })
    expect(await eightContainers(make, 'shared-client-cached', 'cached')).toBe(200)
  })

  it('8 processes × 500 write-through updaters of one property: 4,000, no ConflictError', async () => {
    const olds = await processes(
      { BACKEND: 'redis', URL: redisUrl!, NAMESPACE: prefix, SUBJECT: 'processes' },
      8,
      500,
    )
    const reader = createRedisStorage({ client, prefix })
    expect(await reader.get('processes', 'prop', 'n')).toEqual({ value: 4000 })
    // Each event carried exactly the value its commit replaced.
    everyOldOnce(olds, 4000)
  }, 180_000)
})

describeWith('postgres', 'no lost updates through PostgreSQL', () => {
  const schema = `substate_concurrency_${run}`
  let pool: pg.Pool
  beforeAll(async () => {
    pool = new pg.Pool({ connectionString: databaseUrl, max: 8 })
    await pool.query(`CREATE SCHEMA "${schema}"`)
  })
  afterAll(async () => {
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
    await pool.end()
  })

  it('8 containers on a pg Pool of 8, 25 write-through increments each, brand-new subject: 200', async () => {
    const make = () => createPostgresStorage({ pool, schema, table: 'pool' })
    expect(await eightContainers(make, 'brand-new', 'write-through')).toBe(200)
  })

  it('8 containers on a pg Pool of 8, 25 cached increments each, then store(): 200', async () => {
    const make = () => createPostgresStorage({ pool, schema, table: 'pool' })
    expect(await eightContainers(make, 'brand-new-cached', 'cached')).toBe(200)
  })

  it('8 processes × 500 write-through updaters of one property: 4,000, no ConflictError', async () => {
    const olds = await processes(
      {
        BACKEND: 'postgres',
        URL: databaseUrl!,
        SCHEMA: schema,
        NAMESPACE: 'processes',
        SUBJECT: 'processes',
      },
      8,
      500,
    )
    const reader = createPostgresStorage({ pool, schema, table: 'processes' })
    expect(await reader.get('processes', 'prop', 'n')).toEqual({ value: 4000 })
    everyOldOnce(olds, 4000)
  }, 180_000)
})
