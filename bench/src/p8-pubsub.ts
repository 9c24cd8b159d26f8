/**
 * P8: Pub/Sub publish throughput on the emulator. Substate: 500 events over 20 subjects emitted at
 * once through `container.route(..., pubsubPublisher(...), { policy: 'direct' })`, each `emit`
 * resolving once Pub/Sub accepted its message. Baseline: the raw `@google-cloud/pubsub` client
 * firing the same 500 messages (the same `ce-` attributes, JSON data and ordering keys, on a topic
 * with message ordering) and then collecting their publish promises. Same run, alternating rounds.
 *
 * Detail line: end-to-end throughput of examples/cluster — 3 worker processes on one subscription
 * and a shared Redis storage, from the first publish until every increment is stored.
 */
import { type ChildProcess, fork } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { PubSub, type Topic } from '@google-cloud/pubsub'
import { createContainer } from '@substate/core'
import { pubsubPublisher } from '@substate/pubsub'
import { createRedisStorage } from '@substate/storage-redis'
import { Redis } from 'ioredis'
import { type Benchmark, compare, fmt } from './harness.js'

const EMULATOR = process.env.PUBSUB_EMULATOR_HOST || '127.0.0.1:8085'
const REDIS = process.env.REDIS_URL || 'redis://127.0.0.1:6379'
const PROJECT = 'substate-bench'
const BATCH = 500
const SUBJECTS = 20
const E2E_EVENTS = 5_000
const E2E_WORKERS = 3
const WORKER = fileURLToPath(new URL('../../examples/cluster/dist/worker.js', import.meta.url))

const client = (): PubSub =>
  new PubSub({
    projectId: PROJECT,
    apiEndpoint: EMULATOR,
    emulatorMode: true,
    universeDomain: 'googleapis.com', // no GCE metadata lookup: only the emulator is contacted
  })

/** The raw baseline: what pubsubPublisher sends, built by hand. */
function rawBatch(topic: Topic, round: number): Promise<string[]> {
  const time = new Date().toISOString()
  return Promise.all(
    Array.from({ length: BATCH }, (_, i) => {
      const subject = `s:${i % SUBJECTS}`
      return topic.publishMessage({
        data: Buffer.from(JSON.stringify({ i })),
        orderingKey: subject,
        attributes: {
          'ce-specversion': '1.0',
          'ce-id': `raw-${round}-${i}`,
          'ce-source': 'p8',
          'ce-type': 'bench.tick',
          'ce-subject': subject,
          'ce-time': time,
          'ce-originid': `raw-${round}-${i}`,
          'Content-Type': 'application/json',
        },
      })
    }),
  )
}

async function endToEnd(pubsub: PubSub): Promise<string> {
  if (!existsSync(WORKER)) return `end to end: skipped (${WORKER} not built: run tsc -b)`
  const name = `p8-e2e-${process.pid}`
  const prefix = `substate-bench:p8:${process.pid}:`
  const [topic] = await pubsub.createTopic(name)
  await topic.createSubscription(`${name}-s`, {
    enableMessageOrdering: true,
    ackDeadlineSeconds: 10,
  })
  const redis = new Redis(REDIS, { maxRetriesPerRequest: 1 })
  const workers: ChildProcess[] = []
  try {
    await redis.ping()
    for (let i = 0; i < E2E_WORKERS; i++) {
      const child = fork(WORKER, [], {
        env: {
          ...process.env,
          PUBSUB_EMULATOR_HOST: EMULATOR,
          PUBSUB_PROJECT: PROJECT,
          SUBSCRIPTION: `${name}-s`,
          REDIS_URL: REDIS,
          PREFIX: prefix,
        },
        execArgv: [],
        stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      })
      workers.push(child)
      await new Promise<void>((resolve, reject) => {
        child.on('message', (m: { ready?: boolean }) => m.ready && resolve())
        child.once('exit', (code) => reject(new Error(`example worker exited (${code})`)))
      })
    }
    const front = createContainer({ source: 'p8-front' })
    front.route('page.viewed', pubsubPublisher({ client: pubsub, topic: name }), {
      policy: 'direct',
    })
    const storage = createRedisStorage({ client: redis, prefix })
    const t0 = performance.now()
    await Promise.all(
      Array.from({ length: E2E_EVENTS }, (_, i) => front.emit('page.viewed', `page:${i % 100}`)),
    )
    const published = performance.now() - t0
    for (;;) {
      let total = 0
      for (let p = 0; p < 100; p++)
        total += ((await storage.get(`page:${p}`, 'prop', 'views'))?.value as number) ?? 0
      if (total >= E2E_EVENTS) break
      if (performance.now() - t0 > 120_000) throw new Error(`end to end: only ${total} stored`)
      await new Promise((r) => setTimeout(r, 50))
    }
    const seconds = (performance.now() - t0) / 1000
    await front.close()
    return `end to end (examples/cluster, ${E2E_WORKERS} workers, Redis): ${fmt(E2E_EVENTS / seconds)} events/s (${E2E_EVENTS} events stored in ${seconds.toFixed(1)} s; publishing took ${(published / 1000).toFixed(1)} s)`
  } finally {
    for (const w of workers) w.kill('SIGTERM')
    await Promise.all(
      workers.map((w) => (w.exitCode === null ? new Promise((r) => w.once('exit', r)) : null)),
    )
    let cursor = '0'
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `?:${prefix}*`, 'COUNT', 1000)
      cursor = next
      if (keys.length > 0) await redis.del(...keys)
    } while (cursor !== '0')
    redis.disconnect()
    await pubsub.subscription(`${name}-s`).delete()
    await topic.delete()
  }
}

export const benchmarks: Benchmark[] = [
  {
    id: 'P8',
    title: 'Pub/Sub publish through a route vs the raw client (emulator)',
    async run() {
      const pubsub = client()
      const name = `p8-${process.pid}`
      try {
        const [topic] = await pubsub.createTopic(name).catch((e: unknown) => {
          throw new Error(
            `P8 needs the Pub/Sub emulator at ${EMULATOR} (PUBSUB_EMULATOR_HOST): ${String(e)}`,
          )
        })
        const raw = pubsub.topic(name, { messageOrdering: true })
        const container = createContainer({ source: 'p8' })
        container.route('bench.tick', pubsubPublisher({ client: pubsub, topic: name }), {
          policy: 'direct',
        })
        const subjects = Array.from({ length: SUBJECTS }, (_, i) => container.subject(`s:${i}`))
        let round = 0
        const result = await compare(
          async () => {
            const results = await Promise.all(
              Array.from({ length: BATCH }, (_, i) =>
                container.emit('bench.tick', subjects[i % SUBJECTS]!, { i }),
              ),
            )
            if (!results.every((r) => r.ok)) throw new Error('P8: a publish failed')
            return BATCH
          },
          async () => (await rawBatch(raw, round++)).length,
          { rounds: 7, ms: 2_000 },
        )
        await container.close()
        const e2e = await endToEnd(pubsub).catch(
          (e: unknown) => `end to end: failed (${String(e)})`,
        )
        await topic.delete()
        return [
          {
            id: 'P8',
            goal: 0.8,
            ratio: result.ratio,
            details: [
              `publish, ${BATCH} in flight over ${SUBJECTS} ordering keys: substate ${fmt(result.candidate)} msg/s, raw client ${fmt(result.baseline)} msg/s`,
              e2e,
            ],
          },
        ]
      } finally {
        await pubsub.close()
      }
    },
  },
]
