/**
 * P7: HTTP ingest. autocannon (-c 50) POSTs binary-mode CloudEvents to `createReceiver` (one
 * handler setting a property, in-memory storage: each event is validated, handled in a unit of
 * work and stored before the 202), against a bare Hono server that parses the JSON body and
 * answers 202. Both run on @hono/node-server on 127.0.0.1, each in its own worker thread so the
 * load generator does not share their event loop; rounds alternate between them. Every request
 * has a fresh `ce-id` (no duplicate short-cut) and one of 1,000 subjects.
 *
 * Under @hono/node-server the receiver reads the Node request stream directly, while `c.req.json()`
 * goes through a Web `ReadableStream` adapted from it, which alone roughly halves throughput on
 * small bodies. So a third server, bare Hono reading the Node stream the same way, is measured
 * too: substate against it is the cost of validation, units of work and storage themselves
 * (printed, not the figure's ratio).
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'
import autocannon from 'autocannon'
import { type Benchmark, fmt, median } from './harness.js'

type Kind = 'substate' | 'substate-otel' | 'bare' | 'bare-node'

const CONNECTIONS = 50
const DURATION = 3 // seconds per round
const ROUNDS = 5
const SUBJECTS = 1000

// ---- the servers (worker side) ----

async function startServer(kind: Kind): Promise<void> {
  const { serve } = await import('@hono/node-server')
  let fetch: (req: Request) => Response | Promise<Response>
  let handled = (): number => 0
  if (kind === 'substate' || kind === 'substate-otel') {
    const { createContainer, createMemoryStorage } = await import('@substate/core')
    const { createReceiver } = await import('@substate/hono')
    let tracer: import('@substate/core').TracerLike | undefined
    if (kind === 'substate-otel') {
      // The OpenTelemetry SDK with the in-memory exporter behind the batch span processor, emptied every second.
      const sdk = await import('@opentelemetry/sdk-trace-base')
      const exporter = new sdk.InMemorySpanExporter()
      const provider = new sdk.BasicTracerProvider({
        spanProcessors: [new sdk.BatchSpanProcessor(exporter)],
      })
      tracer = provider.getTracer('p7')
      setInterval(() => exporter.reset(), 1000).unref()
    }
    const container = createContainer({
      storage: createMemoryStorage(),
      source: 'p7',
      ...(tracer === undefined ? {} : { tracer }),
    })
    container.on('device.reading', { name: 'reading' }, async (ctx) => {
      await ctx.subject.set('cpu', (ctx.payload as { cpu: number }).cpu)
    })
    fetch = createReceiver(container).fetch
    handled = () => container.metrics.snapshot().reading?.processed ?? 0
  } else {
    const { Hono } = await import('hono')
    const app = new Hono<{ Bindings: { incoming: NodeJS.ReadableStream } }>()
    let sink = 0
    app.post('/', async (c) => {
      let body: { cpu: number }
      if (kind === 'bare') body = await c.req.json<{ cpu: number }>()
      else {
        // what the receiver does under @hono/node-server: read the Node stream, not the Web one
        const chunks: Buffer[] = []
        for await (const chunk of c.env.incoming) chunks.push(chunk as Buffer)
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'))
      }
      sink += body.cpu
      return c.json({ status: 'handled' }, 202)
    })
    fetch = app.fetch
    handled = () => sink
  }
  const server = serve({ fetch, port: 0, hostname: '127.0.0.1' }, (info) =>
    parentPort!.postMessage({ port: info.port }),
  )
  parentPort!.on('message', (m: string) => {
    if (m === 'handled') parentPort!.postMessage({ handled: handled() })
    if (m === 'stop') server.close(() => process.exit(0))
  })
}

if (!isMainThread && (workerData as { p7?: Kind } | null)?.p7) {
  await startServer((workerData as { p7: Kind }).p7)
}

// ---- the load (main side) ----

interface Server {
  readonly url: string
  ask<T>(message: string, key: string): Promise<T>
  stop(): Promise<void>
}

async function spawn(kind: Kind): Promise<Server> {
  const worker = new Worker(new URL(import.meta.url), { workerData: { p7: kind } })
  const first = <T>(key: string): Promise<T> =>
    new Promise((resolve, reject) => {
      const onMessage = (m: Record<string, T>): void => {
        if (!(key in m)) return
        worker.off('message', onMessage)
        resolve(m[key]!)
      }
      worker.on('message', onMessage)
      worker.once('error', reject)
    })
  const port = await first<number>('port')
  return {
    url: `http://127.0.0.1:${port}/`,
    ask: (message, key) => {
      const answer = first<never>(key)
      worker.postMessage(message)
      return answer
    },
    stop: async () => {
      worker.postMessage('stop')
      await new Promise((r) => worker.once('exit', r))
    },
  }
}

interface Round {
  readonly rps: number
  readonly p99: number
  readonly ok: number
}

// One counter for the whole run: a `ce-id` seen before would be acknowledged as a duplicate.
let sent = 0

async function load(url: string, seconds: number): Promise<Round> {
  const result = await autocannon({
    url,
    connections: CONNECTIONS,
    duration: seconds,
    method: 'POST',
    requests: [
      {
        method: 'POST',
        body: '{"cpu":42}',
        setupRequest: (req) => {
          const n = ++sent
          req.headers = {
            'content-type': 'application/json',
            'ce-specversion': '1.0',
            'ce-id': `r-${n}`,
            'ce-source': 'bench',
            'ce-type': 'device.reading',
            'ce-subject': `device:${n % SUBJECTS}`,
          }
          return req
        },
      },
    ],
  })
  if (result.non2xx > 0 || result.errors > 0 || result.timeouts > 0)
    throw new Error(
      `P7: ${url} answered ${result.non2xx} non-2xx, ${result.errors} errors, ${result.timeouts} timeouts`,
    )
  return { rps: result.requests.average, p99: result.latency.p99, ok: result['2xx'] }
}

export const benchmarks: Benchmark[] = [
  {
    id: 'P7',
    title: `HTTP receiver, binary CloudEvent, 1 handler, memory, autocannon -c ${CONNECTIONS} (vs bare Hono JSON POST → 202)`,
    async run() {
      const substate = await spawn('substate')
      const otel = await spawn('substate-otel')
      const bare = await spawn('bare')
      const bareNode = await spawn('bare-node')
      try {
        await load(substate.url, 1) // warm-up
        await load(otel.url, 1)
        await load(bare.url, 1)
        await load(bareNode.url, 1)
        const s: Round[] = []
        const o: Round[] = []
        const b: Round[] = []
        const n: Round[] = []
        const ratios: number[] = []
        const nodeRatios: number[] = []
        const otelRatios: number[] = []
        for (let i = 0; i < ROUNDS; i++) {
          // rotate the order every round so no side always runs on a warmer machine
          const order = [substate, otel, bare, bareNode]
          for (let k = 0; k < i % 4; k++) order.push(order.shift()!)
          const r = new Map<Server, Round>()
          for (const server of order) r.set(server, await load(server.url, DURATION))
          s.push(r.get(substate)!)
          o.push(r.get(otel)!)
          b.push(r.get(bare)!)
          n.push(r.get(bareNode)!)
          ratios.push(r.get(substate)!.rps / r.get(bare)!.rps)
          nodeRatios.push(r.get(substate)!.rps / r.get(bareNode)!.rps)
          otelRatios.push(r.get(otel)!.rps / r.get(substate)!.rps)
        }
        const handled = await substate.ask<number>('handled', 'handled')
        const acked = s.reduce((sum, r) => sum + r.ok, 0)
        if (handled < acked)
          throw new Error(`P7: ${acked} events acknowledged but only ${handled} handled`)
        return [
          {
            id: 'P7',
            goal: 0.5,
            ratio: median(ratios),
            details: [
              `substate receiver ${fmt(median(s.map((r) => r.rps)))} req/s, p99 ${median(s.map((r) => r.p99))} ms`,
              `bare hono, c.req.json() ${fmt(median(b.map((r) => r.rps)))} req/s, p99 ${median(b.map((r) => r.p99))} ms`,
              `bare hono reading the Node stream ${fmt(median(n.map((r) => r.rps)))} req/s, p99 ${median(n.map((r) => r.p99))} ms (substate / this = ${median(nodeRatios).toFixed(2)}: the engine's own cost)`,
              `${handled.toLocaleString('en-US')} events handled and stored for ${acked.toLocaleString('en-US')} measured 202s (plus warm-up)`,
            ],
          },
          {
            id: 'P7-otel',
            goal: 0,
            ratio: median(otelRatios),
            details: [
              `substate receiver with the OpenTelemetry SDK on (in-memory exporter) ${fmt(median(o.map((r) => r.rps)))} req/s, p99 ${median(o.map((r) => r.p99))} ms; ratio = tracing on / off`,
            ],
          },
        ]
      } finally {
        await otel.stop()
        await substate.stop()
        await bare.stop()
        await bareNode.stop()
      }
    },
  },
]
