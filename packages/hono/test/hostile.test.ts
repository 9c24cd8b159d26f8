/**
 * Hostile input over a real socket: invalid UTF-8, deep nesting, huge batches, huge ids, internal
 * errors that must not leak, and readiness checks.
 */
import { createContainer, createMemoryStorage, StorageError } from '@substate/core'
import { createReceiver, type ReceiverOptions } from '@substate/hono'
import { afterEach, expect, it } from 'vitest'
import { binary, listen, structured } from './_support.js'

const cleanup: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn()
})

async function serve(options: ReceiverOptions = {}) {
  const storage = createMemoryStorage()
  const container = createContainer({ storage, source: 'hostile' })
  container.onError(() => {})
  const handled: string[] = []
  container.on('device.reading', async (ctx) => {
    handled.push(ctx.id)
    await ctx.subject.set('seen', true)
  })
  const logged: Array<{ errorId: string; error: unknown }> = []
  const app = createReceiver(container, {
    onError: (error, errorId) => logged.push({ error, errorId }),
    ...options,
  })
  const server = await listen(app.fetch)
  cleanup.push(
    () => server.close(),
    () => container.close(),
  )
  const post = (headers: Record<string, string>, body: RequestInit['body']) =>
    fetch(`${server.url}/`, { method: 'POST', headers, body })
  return { container, storage, handled, logged, post, url: server.url }
}

// A JSON text with one byte that is not UTF-8 inside a string.
const badUtf8 = (prefix: string, suffix: string) =>
  Buffer.concat([Buffer.from(prefix), Buffer.from([0xff, 0xfe]), Buffer.from(suffix)])

it('invalid UTF-8 in a JSON body is 400 naming data, in binary and structured mode', async () => {
  const s = await serve()
  const bin = await s.post(binary(), badUtf8('{"cpu":"', '"}'))
  expect(bin.status).toBe(400)
  expect(await bin.json()).toEqual({ error: expect.stringMatching(/UTF-8/), field: 'data' })
  const json = JSON.stringify(structured({ data: { cpu: 'X' } }))
  const [head, tail] = json.split('X') as [string, string]
  const st = await s.post({ 'content-type': 'application/cloudevents+json' }, badUtf8(head, tail))
  expect(st.status).toBe(400)
  expect(await st.json()).toMatchObject({ field: 'data' })
  expect(s.handled).toEqual([])
})

it('data nested 100,000 deep is 400 naming data (not a 500); 256 levels are fine', async () => {
  const s = await serve({ maxBodySize: 1_000_000 })
  const deep = `${'['.repeat(100_000)}${']'.repeat(100_000)}`
  const bin = await s.post(binary(), deep)
  expect(bin.status).toBe(400)
  expect(await bin.json()).toEqual({ error: expect.stringMatching(/256/), field: 'data' })
  const st = await s.post(
    { 'content-type': 'application/cloudevents+json' },
    `{"specversion":"1.0","id":"d","source":"t","type":"device.reading","subject":"device:1","data":${deep}}`,
  )
  expect(st.status).toBe(400)
  expect(await st.json()).toMatchObject({ field: 'data' })
  const batch = await s.post(
    { 'content-type': 'application/cloudevents-batch+json' },
    `[${JSON.stringify(structured({ id: 'ok' }))},{"specversion":"1.0","id":"d","source":"t","type":"device.reading","subject":"device:1","data":${deep}}]`,
  )
  expect(batch.status).toBe(400)
  expect(await batch.json()).toMatchObject({ field: '[1].data' })
  const fine = await s.post(binary({}, 'fine'), `${'['.repeat(256)}${']'.repeat(256)}`)
  expect(fine.status).toBe(202)
  expect(s.handled).toEqual(['fine'])
})

it('ids and sources longer than maxIdLength bytes are 400 naming the field', async () => {
  const s = await serve({ maxBodySize: 4_000_000 })
  const long = 'x'.repeat(1_025)
  const id = await s.post(binary({}, long), '{}')
  expect(id.status).toBe(400)
  expect(await id.json()).toEqual({ error: expect.stringMatching(/1024 bytes/), field: 'id' })
  const source = await s.post(binary({ 'ce-source': 'é'.repeat(600) }), '{}')
  expect(source.status).toBe(400)
  expect(await source.json()).toMatchObject({ field: 'source' })
  const batch = await s.post(
    { 'content-type': 'application/cloudevents-batch+json' },
    JSON.stringify([structured({ id: 'a' }), structured({ id: 'm'.repeat(1_000_000) })]),
  )
  expect(batch.status).toBe(400)
  expect(await batch.json()).toMatchObject({ field: '[1].id' })
  expect((await s.post(binary({}, 'y'.repeat(1_024)), '{}')).status).toBe(202)
  expect(s.handled).toEqual(['y'.repeat(1_024)])
})

it('a batch over maxBatchSize is 413 naming the body, unhandled', async () => {
  const s = await serve({ maxBatchSize: 10 })
  const events = Array.from({ length: 11 }, (_, i) => structured({ id: `b${i}` }))
  const res = await s.post(
    { 'content-type': 'application/cloudevents-batch+json' },
    JSON.stringify(events),
  )
  expect(res.status).toBe(413)
  expect(await res.json()).toEqual({ error: expect.stringMatching(/at most 10/), field: 'body' })
  expect(s.handled).toEqual([])
})

it('a large batch does not hold other clients: they are answered while it runs', async () => {
  const n = 20_000
  const s = await serve({ maxBodySize: 20_000_000, maxBatchSize: n })
  const events = Array.from({ length: n }, (_, i) =>
    structured({ id: `big-${i}`, subject: `device:${i % 500}` }),
  )
  const big = s.post(
    { 'content-type': 'application/cloudevents-batch+json' },
    JSON.stringify(events),
  )
  // Once the batch is being handled, single events from another client still get through.
  while (s.handled.length === 0) await new Promise((r) => setTimeout(r, 1))
  const others: number[] = []
  for (let i = 0; i < 5; i++) {
    const res = await s.post(binary({}, `other-${i}`, 'device:other'), '{}')
    others.push(res.status)
  }
  const servedDuring = s.handled.filter((id) => id.startsWith('other-')).length
  const handledBigWhenOthersDone = s.handled.filter((id) => id.startsWith('big-')).length
  const res = await big
  expect(res.status).toBe(202)
  expect(others).toEqual([202, 202, 202, 202, 202])
  expect(servedDuring).toBe(5)
  // The five other requests were answered before the batch had been handled to its end.
  expect(handledBigWhenOthersDone).toBeLessThan(n)
})

it('a 500 carries a short message and an error id that is logged, never the internal text', async () => {
  const s = await serve()
  s.container.on('device.reading', () => {
    throw new StorageError('test', 'commit', 'device:1', 'connect ECONNREFUSED 127.0.0.1:1', {
      cause: new Error('connect ECONNREFUSED 127.0.0.1:1'),
    })
  })
  const res = await s.post(binary(), '{}')
  expect(res.status).toBe(500)
  const body = (await res.json()) as { error: string; errorId: string }
  expect(body).toEqual({ error: expect.any(String), errorId: expect.any(String) })
  expect(JSON.stringify(body)).not.toMatch(/ECONNREFUSED/)
  expect(s.logged.map((l) => l.errorId)).toContain(body.errorId)
  expect(String(s.logged.find((l) => l.errorId === body.errorId)?.error)).toMatch(/ECONNREFUSED/)
})

it('/readyz runs the readiness checks: 503 naming the failing one, 200 once it passes', async () => {
  let pubsub = false
  const s = await serve({
    readiness: {
      pubsub: () => pubsub,
      storage: async () => true,
      hangs: () => new Promise<boolean>(() => {}),
    },
    readinessTimeout: 100,
  })
  const first = await fetch(`${s.url}/readyz`)
  expect(first.status).toBe(503)
  expect(await first.json()).toEqual({
    status: 'not ready',
    checks: { pubsub: false, storage: true, hangs: false },
  })
  pubsub = true
  const s2 = await serve({ readiness: { pubsub: () => pubsub, throws: () => true } })
  const ok = await fetch(`${s2.url}/readyz`)
  expect(ok.status).toBe(200)
  expect(await ok.json()).toEqual({ status: 'ready', checks: { pubsub: true, throws: true } })
})
