/**
 * The HTTP front: turns requests into events and publishes them to the topic (the route's policy
 * is `direct`, so nothing is handled here). A request is answered 202 once Pub/Sub accepted the
 * message, 502 when the publish failed. Reads come straight from the shared storage.
 *
 *   POST /events/:type/:subject   JSON body = payload   → 202 { id }
 *   GET  /subjects/:name                                → 200 { props, ext }
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { createContainer } from '@substate/core'
import { pubsubPublisher } from '@substate/pubsub'
import { createRedisStorage } from '@substate/storage-redis'
import { Redis } from 'ioredis'
import { config, pubsubClient } from './config.js'

const redis = new Redis(config.redisUrl)
const storage = createRedisStorage({ client: redis, prefix: config.prefix })
const client = pubsubClient()
const container = createContainer({ source: 'cluster-front' })
container.route('**', pubsubPublisher({ client, topic: config.topic }), { policy: 'direct' })

const send = (res: ServerResponse, status: number, body: unknown): void => {
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(JSON.stringify(body))
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = []
  for await (const chunk of req) chunks.push(chunk as Buffer)
  const text = Buffer.concat(chunks).toString('utf8')
  return text === '' ? undefined : JSON.parse(text)
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const [, kind, first, second] = (req.url ?? '/').split('?')[0]!.split('/').map(decodeURIComponent)
  if (req.method === 'POST' && kind === 'events' && first && second) {
    let payload: unknown
    try {
      payload = await readJson(req)
    } catch {
      return send(res, 400, { error: 'the body must be JSON' })
    }
    const result = await container.emit(first, second, payload)
    if (!result.ok)
      return send(res, 502, { error: result.failures.map((f) => f.error.message).join('; ') })
    return send(res, 202, { id: result.event.id })
  }
  if (req.method === 'GET' && kind === 'subjects' && first) {
    return send(res, 200, await storage.load(first))
  }
  if (req.method === 'GET' && kind === 'healthz') return send(res, 200, { ok: true })
  send(res, 404, { error: 'POST /events/:type/:subject or GET /subjects/:name' })
}

const server = createServer((req, res) => {
  handle(req, res).catch((e: unknown) => send(res, 500, { error: String(e) }))
})
server.listen(config.port, '127.0.0.1', () => {
  console.log(`[front] http://127.0.0.1:${config.port} → topic ${config.topic}`)
  process.send?.({ ready: true })
})

process.once('SIGTERM', () => {
  server.close()
  void container.close().then(async () => {
    await client.close()
    redis.disconnect()
    process.disconnect?.()
  })
})
