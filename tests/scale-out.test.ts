/**
 * Scale-out correctness (DESIGN §3.12) with real processes, sockets and servers: three replicas of
 * one service, each with its own HTTP receiver, on one Redis or PostgreSQL, fed concurrently by
 * senders that retry every non-2xx with the same CloudEvent id. What must hold afterwards is an
 * invariant of the stored data, whatever the interleaving:
 * - every device's stored `health` is the rule applied to its stored metrics;
 * - bank transfers (read both balances, write both, plain get/set) conserve the total, none < 0.
 */
import { type ChildProcess, fork } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { SubjectStorage } from '@substate/core'
import { healthOf } from '@substate/example-device-health/rules'
import { createPostgresStorage } from '@substate/storage-postgres'
import { createRedisStorage } from '@substate/storage-redis'
import { databaseUrl, describeWith, redisUrl } from '@substate/test-support/services'
import { Redis } from 'ioredis'
import pg from 'pg'
import { afterEach, expect, it } from 'vitest'

const REPLICA = fileURLToPath(new URL('./dist/replica.js', import.meta.url))
const run = `${process.pid}_${Date.now().toString(36)}`
const cleanup: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn().catch(() => {})
})

/** A deterministic pseudo-random sequence, so a failure can be replayed. */
function random(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0
    return s / 2 ** 32
  }
}

async function replicas(env: Record<string, string>, n: number): Promise<string[]> {
  if (!existsSync(REPLICA)) throw new Error(`${REPLICA} is missing: run \`pnpm exec tsc -b\` first`)
  const children: ChildProcess[] = []
  cleanup.push(async () => {
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null) return resolve()
            const kill = setTimeout(() => c.kill('SIGKILL'), 10_000)
            c.once('exit', () => {
              clearTimeout(kill)
              resolve()
            })
            c.send('stop')
          }),
      ),
    )
  })
  return Promise.all(
    Array.from({ length: n }, () => {
      const child = fork(REPLICA, {
        env: { ...process.env, ...env },
        execArgv: [],
        stdio: 'inherit',
      })
      children.push(child)
      return new Promise<string>((resolve, reject) => {
        child.once('message', (m) => resolve((m as { url: string }).url))
        child.once('exit', (code) => reject(new Error(`replica exited with ${code}`)))
      })
    }),
  )
}

interface Sent {
  readonly id: string
  readonly type: string
  readonly subject: string
  readonly payload: unknown
}

/** POSTs every event to a random replica, `inFlight` at once, retrying non-2xx (same id). */
async function send(urls: string[], events: Sent[], inFlight: number, rnd: () => number) {
  const statuses = new Map<number, number>()
  let next = 0
  const one = async (e: Sent): Promise<void> => {
    for (let attempt = 1; ; attempt++) {
      const url = urls[Math.floor(rnd() * urls.length)]!
      let status = 0
      try {
        const res = await fetch(url, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'ce-specversion': '1.0',
            'ce-id': e.id,
            'ce-source': 'scale-out-test',
            'ce-type': e.type,
            'ce-subject': e.subject,
          },
          body: JSON.stringify(e.payload),
        })
        status = res.status
        await res.arrayBuffer()
      } catch {
        status = -1
      }
      statuses.set(status, (statuses.get(status) ?? 0) + 1)
      if (status === 202) return
      if (attempt >= 100) throw new Error(`${e.id} never acknowledged (last status ${status})`)
      await new Promise((r) => setTimeout(r, Math.min(10 * attempt, 200)))
    }
  }
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < events.length) await one(events[next++]!)
    }),
  )
  return statuses
}

async function deviceHealth(env: Record<string, string>, reader: SubjectStorage): Promise<void> {
  const urls = await replicas(env, 3)
  const rnd = random(7)
  const events: Sent[] = Array.from({ length: 600 }, (_, i) => {
    const payload: Record<string, number> = {}
    if (rnd() < 0.6) payload.cpu = Math.floor(rnd() * 100)
    if (rnd() < 0.6) payload.memory = Math.floor(rnd() * 100)
    if (rnd() < 0.3) payload.error_rate = Math.floor(rnd() * 15)
    return { id: `m${i}`, type: 'device.metrics', subject: `device:${i % 10}`, payload }
  })
  const statuses = await send(urls, events, 30, rnd)
  expect(statuses.get(202)).toBe(600)
  for (let d = 0; d < 10; d++) {
    const { props } = await reader.load(`device:${d}`)
    const metrics = {
      cpu: (props.cpu as number | undefined) ?? 0,
      memory: (props.memory as number | undefined) ?? 0,
      error_rate: (props.error_rate as number | undefined) ?? 0,
    }
    expect({ device: d, health: props.health }).toEqual({ device: d, health: healthOf(metrics) })
  }
}

async function transfers(
  env: Record<string, string>,
  reader: SubjectStorage,
  writer: SubjectStorage,
): Promise<void> {
  for (let a = 0; a < 5; a++)
    await writer.commit(`acct:${a}`, [{ op: 'set', kind: 'prop', name: 'balance', value: 100 }])
  const urls = await replicas(env, 3)
  const rnd = random(11)
  const events: Sent[] = Array.from({ length: 400 }, (_, i) => {
    const from = Math.floor(rnd() * 5)
    const to = (from + 1 + Math.floor(rnd() * 4)) % 5
    return {
      id: `t${i}`,
      type: 'transfer',
      subject: `transfer:${i}`,
      payload: { from: `acct:${from}`, to: `acct:${to}`, amount: 1 + Math.floor(rnd() * 40) },
    }
  })
  const statuses = await send(urls, events, 30, rnd)
  expect(statuses.get(202)).toBe(400)
  let total = 0
  for (let a = 0; a < 5; a++) {
    const balance = (await reader.get(`acct:${a}`, 'prop', 'balance'))?.value as number
    expect(balance).toBeGreaterThanOrEqual(0)
    total += balance
  }
  expect(total).toBe(500)
  let done = 0
  for (let i = 0; i < 400; i++) if ((await reader.load(`transfer:${i}`)).props.done) done++
  expect(done).toBeGreaterThan(0) // money moved, not only refusals
}

describeWith('redis', 'three replicas on one Redis', () => {
  const setup = (name: string) => {
    const prefix = `scale-${name}-${run}:`
    const client = new Redis(redisUrl!)
    cleanup.push(async () => {
      const keys = await client.keys(`*${prefix}*`)
      if (keys.length > 0) await client.del(...keys)
      client.disconnect()
    })
    const storage = createRedisStorage({ client, prefix })
    return { env: { BACKEND: 'redis', URL: redisUrl!, NAMESPACE: prefix }, storage }
  }
  it('600 metric events for 10 devices, 30 in flight: every stored health follows from the stored metrics', async () => {
    const { env, storage } = setup('health')
    await deviceHealth(env, storage)
  }, 180_000)
  it('400 concurrent transfers between 5 accounts: the total is conserved, no balance negative', async () => {
    const { env, storage } = setup('bank')
    await transfers(env, storage, storage)
  }, 180_000)
})

describeWith('postgres', 'three replicas on one PostgreSQL', () => {
  const setup = (name: string) => {
    const table = `scale_${name}_${run}`
    const pool = new pg.Pool({ connectionString: databaseUrl!, max: 2 })
    cleanup.push(async () => {
      await pool.query(
        `DROP TABLE IF EXISTS "${table}", "${table}_applied", "${table}_outbox" CASCADE`,
      )
      await pool.end()
    })
    const storage = createPostgresStorage({ pool, table })
    return { env: { BACKEND: 'postgres', URL: databaseUrl!, NAMESPACE: table }, storage }
  }
  it('600 metric events for 10 devices, 30 in flight: every stored health follows from the stored metrics', async () => {
    const { env, storage } = setup('health')
    await deviceHealth(env, storage)
  }, 180_000)
  it('400 concurrent transfers between 5 accounts: the total is conserved, no balance negative', async () => {
    const { env, storage } = setup('bank')
    await transfers(env, storage, storage)
  }, 180_000)
})
