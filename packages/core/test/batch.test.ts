import {
  createContainer,
  createMemoryStorage,
  type EventContext,
  type HandlerFailure,
  type IncomingEvent,
  SUBJECT_PROPERTY_CHANGED,
} from '@substate/core'
import { expect, it } from 'vitest'

let seq = 0
const incoming = (subject: string, payload?: unknown): IncomingEvent => ({
  id: `e-${++seq}`,
  source: 'test',
  type: 'reading',
  subject,
  payload,
})

it('collects events into batches of `size`, and a partial batch after `wait`', async () => {
  const c = createContainer()
  const batches: string[][] = []
  c.on('reading', { batch: { size: 4, wait: 30 } }, async (ctxs) => {
    batches.push(ctxs.map((ctx) => ctx.subject.name))
  })
  const started = Date.now()
  const results = await Promise.all(
    Array.from({ length: 10 }, (_, i) => c.emit('reading', `s:${i}`)),
  )
  expect(results.every((r) => r.ok && r.handled === 1)).toBe(true)
  expect(batches.map((b) => b.length)).toEqual([4, 4, 2])
  expect(batches.flat()).toEqual(Array.from({ length: 10 }, (_, i) => `s:${i}`))
  expect(Date.now() - started).toBeGreaterThanOrEqual(25) // the last two waited for `wait`

  // An event's emit resolves only once its batch was handled.
  let handled = false
  c.on('slow', { batch: { size: 100, wait: 20 } }, async () => {
    handled = true
  })
  await c.emit('slow', 's')
  expect(handled).toBe(true)
  await c.close()
})

it("stores a batch's writes before its events are acknowledged, one unit of work", async () => {
  const storage = createMemoryStorage()
  const c = createContainer({ storage })
  const seen: string[] = []
  c.on(SUBJECT_PROPERTY_CHANGED, (ctx) => {
    seen.push(`${ctx.subject.name}.${ctx.propertyName}`)
  })
  c.on('reading', { batch: { size: 3, wait: 1000 } }, async (ctxs: EventContext[]) => {
    // One write per event, and one summary over the batch: cached writes, no store() here.
    for (const ctx of ctxs) await ctx.subject.set('cpu', (ctx.payload as { cpu: number }).cpu)
    await c
      .subject('summary')
      .set('max', Math.max(...ctxs.map((x) => (x.payload as { cpu: number }).cpu)))
  })
  const results = await Promise.all([
    c.receive(incoming('d:1', { cpu: 10 })),
    c.receive(incoming('d:2', { cpu: 30 })),
    c.receive(incoming('d:3', { cpu: 20 })),
  ])
  expect(results.map((r) => r.status)).toEqual(['handled', 'handled', 'handled'])
  expect((await storage.load('d:2')).props).toEqual({ cpu: 30 })
  expect((await storage.load('summary')).props).toEqual({ max: 30 })
  expect(seen.sort()).toEqual(['d:1.cpu', 'd:2.cpu', 'd:3.cpu', 'summary.max'])
  await c.close()
})

it('fails every event of a failed batch, stores nothing it cached, and retries event by event', async () => {
  const storage = createMemoryStorage()
  const c = createContainer({ storage })
  const failures: HandlerFailure[] = []
  c.onError((f) => failures.push(f))
  let calls = 0
  c.on(
    'reading',
    {
      name: 'flaky-batch',
      batch: { size: 2, wait: 1000 },
      retry: { attempts: 2, backoff: { initial: 1 } },
    },
    async (ctxs) => {
      calls++
      for (const ctx of ctxs) await ctx.subject.set('n', (n = 0) => n + 1)
      if (calls === 1) throw new Error('first batch fails')
    },
  )
  // The first batch fails; each event retries on its own, and the retries batch together again.
  const results = await Promise.all([c.receive(incoming('r:1')), c.receive(incoming('r:2'))])
  expect(results.map((r) => r.status)).toEqual(['handled', 'handled'])
  expect(calls).toBe(2)
  expect((await storage.load('r:1')).props).toEqual({ n: 1 }) // the failed attempt stored nothing
  expect((await storage.load('r:2')).props).toEqual({ n: 1 })
  expect(failures).toEqual([])

  // Without retries, a failing batch fails each of its events; nothing it wrote is stored.
  c.on('broken', { name: 'broken-batch', batch: { size: 2, wait: 1000 } }, async (ctxs) => {
    for (const ctx of ctxs) await ctx.subject.set('x', 1)
    throw new Error('always')
  })
  const broken = await Promise.all([
    c.receive({ ...incoming('b:1'), type: 'broken' }),
    c.receive({ ...incoming('b:2'), type: 'broken' }),
  ])
  expect(broken.map((r) => r.status)).toEqual(['failed', 'failed'])
  expect(failures.map((f) => f.handler)).toEqual(['broken-batch', 'broken-batch'])
  expect((await storage.load('b:1')).props).toEqual({})
  expect(c.subject('b:1').toJSON().props).toEqual({})
  await c.close()
})

it.each([
  ['not dead-lettered', undefined],
  ['dead-lettered to a non-durable sink', { durable: false, put: async () => {} }],
] as const)(
  'a failure in the cascade a batch started fails the batch (%s)',
  async (_, deadLetter) => {
    const storage = createMemoryStorage()
    const c = createContainer(deadLetter === undefined ? { storage } : { storage, deadLetter })
    c.onError(() => {})
    c.on('reading', { batch: { size: 2, wait: 1000 } }, async (ctxs) => {
      await c.subject('agg').set('count', ctxs.length)
      await ctxs[0]!.emit('nested')
    })
    c.on('nested', () => {
      throw new Error('nested fails')
    })
    const results = await Promise.all([c.receive(incoming('n:1')), c.receive(incoming('n:2'))])
    // The ingress would not acknowledge the nested failure: the batch's writes are not stored.
    expect(results.map((r) => r.status)).toEqual(['failed', 'failed'])
    expect((await storage.load('agg')).props).toEqual({})
    await c.close()
  },
)

it('close() runs a partial batch at once instead of waiting for `wait`', async () => {
  const c = createContainer()
  const got: number[] = []
  c.on('reading', { batch: { size: 100, wait: 60_000 } }, async (ctxs) => {
    got.push(ctxs.length)
    for (const ctx of ctxs) await ctx.subject.set('seen', true)
  })
  const pending = Promise.all([c.receive(incoming('c:1')), c.receive(incoming('c:2'))])
  await new Promise((r) => setTimeout(r, 10))
  const started = Date.now()
  const report = await c.close({ drainTimeout: 5_000 })
  expect(Date.now() - started).toBeLessThan(2_000)
  expect(report.timedOut).toBe(false)
  expect((await pending).map((r) => r.status)).toEqual(['handled', 'handled'])
  expect(got).toEqual([2])
})

it('rejects batch options it cannot honour', () => {
  const c = createContainer()
  expect(() => c.on('x', { batch: { size: 0, wait: 10 } }, () => {})).toThrow(/batch.size/)
  expect(() => c.on('x', { batch: { size: 2, wait: -1 } }, () => {})).toThrow(/batch.wait/)
  expect(() => c.on('x', { batch: { size: 2, wait: 10 }, timeout: 5 }, () => {})).toThrow(
    /takes no timeout/,
  )
})

it('request/reply works through a batch handler: each reply keeps its own origin id', async () => {
  const c = createContainer()
  c.on('quote', { batch: { size: 3, wait: 1000 } }, async (ctxs) => {
    for (const ctx of ctxs) await ctx.emit('quoted', { for: ctx.subject.name })
  })
  const replies = await Promise.all(
    ['a', 'b', 'c'].map((s) =>
      c.request('quote', s, undefined, { reply: 'quoted', timeout: 2000 }),
    ),
  )
  expect(replies.map((r) => (r.payload as { for: string }).for)).toEqual(['a', 'b', 'c'])
  await c.close()
})
