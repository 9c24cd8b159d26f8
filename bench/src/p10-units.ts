/**
 * P10: units of work on Redis, end to end. autocannon (-c 50) POSTs binary-mode CloudEvents to
 * `createReceiver`; each event is a unit of work whose handler reads two properties of its
 * subject and writes one, committed (reads checked, write applied) in one atomic storage
 * operation before the 202. Baseline, in the same run: bare Hono reading the request the same way
 * and running one Lua script per request on ioredis that reads the two fields and writes the
 * third (the least a hand-written, atomic read-then-write service does). Both run on
 * @hono/node-server in worker threads; rounds alternate. Also measured (detail lines): the same
 * service as 3 replicas (3 workers, 3 clients) on one Redis, each getting a third of the load.
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'
import autocannon from 'autocannon'
import { type Benchmark, fmt, median } from './harness.js'

type Kind = 'substate' | 'raw'

const CONNECTIONS = 50
const DURATION = 3
const ROUNDS = 5
const SUBJECTS = 1000
const PREFIX = `p10-${process.pid}:`

const SCRIPT = `
local v = redis.call('HMGET', KEYS[1], 'pcpu', 'pmemory')
redis.call('HSET', KEYS[1], 'plast', ARGV[1])
return v
`

async function startServer(kind: Kind): Promise<void> {
  const { serve } = await import('@hono/node-server')
  const { Redis } = await import('ioredis')
  const client = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379')
  let fetch: (req: Request) => Response | Promise<Response>
  if (kind === 'substate') {
    const { createContainer } = await import('@substate/core')
    const { createReceiver } = await import('@substate/hono')
    const { createRedisStorage } = await import('@substate/storage-redis')
    const container = createContainer({
      storage: createRedisStorage({ client, prefix: PREFIX }),
      source: 'p10',
    })
    container.on('device.reading', { name: 'reading' }, async (ctx) => {
      const cpu = await ctx.subject.get<number>('cpu', { default: 0 })
      const memory = await ctx.subject.get<number>('memory', { default: 0 })
      await ctx.subject.set('last', (ctx.payload as { n: number }).n + cpu * 0 + memory * 0)
    })
    fetch = createReceiver(container).fetch
  } else {
    const { Hono } = await import('hono')
    const { createHash } = await import('node:crypto')
    const sha = createHash('sha1').update(SCRIPT).digest('hex')
    await client.script('LOAD', SCRIPT)
    const app = new Hono<{ Bindings: { incoming: NodeJS.ReadableStream } }>()
    app.post('/', async (c) => {
      const chunks: Buffer[] = []
      for await (const chunk of c.env.incoming) chunks.push(chunk as Buffer)
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { n: number }
      const subject = c.req.header('ce-subject')
      await client.evalsha(sha, 1, `s:${PREFIX}raw:${subject}`, String(body.n))
      return c.json({ status: 'handled' }, 202)
    })
    fetch = app.fetch
  }
  const server = serve({ fetch, port: 0, hostname: '127.0.0.1' }, (info) =>
    parentPort!.postMessage({ port: info.port }),
  )
  parentPort!.on('message', (m: string) => {
    if (m === 'stop')
      server.close(() => {
        client.disconnect()
        process.exit(0)
      })
  })
}

if (!isMainThread && (workerData as { p10?: Kind } | null)?.p10) {
  await startServer((workerData as { p10: Kind }).p10)
}

interface Server {
  readonly url: string
  stop(): Promise<void>
}

async function spawn(kind: Kind): Promise<Server> {
  const worker = new Worker(new URL(import.meta.url), { workerData: { p10: kind } })
  const port = await new Promise<number>((resolve, reject) => {
    worker.once('message', (m: { port: number }) => resolve(m.port))
    worker.once('error', reject)
  })
  return {
    url: `http://127.0.0.1:${port}/`,
    stop: async () => {
      worker.postMessage('stop')
      await new Promise((r) => worker.once('exit', r))
    },
  }
}

let sent = 0

async function load(url: string, seconds: number, connections = CONNECTIONS): Promise<number> {
  const result = await autocannon({
    url,
    connections,
    duration: seconds,
    method: 'POST',
    requests: [
      {
        method: 'POST',
        setupRequest: (req) => {
          const n = ++sent
          req.headers = {
            'content-type': 'application/json',
            'ce-specversion': '1.0',
            'ce-id': `p10-${process.pid}-${n}`,
            'ce-source': 'bench',
            'ce-type': 'device.reading',
            'ce-subject': `device:${n % SUBJECTS}`,
          }
          req.body = `{"n":${n}}`
          return req
        },
      },
    ],
  })
  if (result.non2xx > 0 || result.errors > 0 || result.timeouts > 0)
    throw new Error(
      `P10: ${url} answered ${result.non2xx} non-2xx, ${result.errors} errors, ${result.timeouts} timeouts`,
    )
  return result.requests.average
}

async function cleanup(): Promise<void> {
  const { Redis } = await import('ioredis')
  const client = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379')
  let cursor = '0'
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `*${PREFIX}*`, 'COUNT', 1000)
    cursor = next
    if (keys.length > 0) await client.del(...keys)
  } while (cursor !== '0')
  client.disconnect()
}

export const benchmarks: Benchmark[] = [
  {
    id: 'P10',
    title: `HTTP CloudEvent → unit of work on Redis (reads 2 properties, writes 1) → 202, autocannon -c ${CONNECTIONS} (vs bare Hono + one Lua read-write script per request)`,
    async run() {
      const substate = await spawn('substate')
      const raw = await spawn('raw')
      try {
        await load(substate.url, 1)
        await load(raw.url, 1)
        const s: number[] = []
        const r: number[] = []
        const ratios: number[] = []
        for (let i = 0; i < ROUNDS; i++) {
          const first = i % 2 === 0
          const rs = first ? await load(substate.url, DURATION) : 0
          const rr = await load(raw.url, DURATION)
          const rs2 = first ? rs : await load(substate.url, DURATION)
          s.push(rs2)
          r.push(rr)
          ratios.push(rs2 / rr)
        }
        await substate.stop()
        // Three replicas on one Redis, a third of the connections each, concurrently.
        const replicas = await Promise.all([0, 1, 2].map(() => spawn('substate')))
        let three = 0
        try {
          await Promise.all(replicas.map((x) => load(x.url, 1, 17)))
          const rounds: number[] = []
          for (let i = 0; i < 3; i++) {
            const rates = await Promise.all(replicas.map((x) => load(x.url, DURATION, 17)))
            rounds.push(rates.reduce((a, b) => a + b, 0))
          }
          three = median(rounds)
        } finally {
          for (const x of replicas) await x.stop()
        }
        return [
          {
            id: 'P10',
            goal: 0.6,
            ratio: median(ratios),
            details: [
              `substate, 1 replica: ${fmt(median(s))} units/s (each stored before its 202)`,
              `raw: bare Hono + ioredis EVALSHA read-2-write-1 per request: ${fmt(median(r))} req/s`,
              `substate, 3 replicas on one Redis (3 workers, 17 connections each, shared subjects): ${fmt(three)} units/s in all`,
            ],
          },
        ]
      } finally {
        await raw.stop()
        await cleanup()
      }
    },
  },
]
