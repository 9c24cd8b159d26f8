import {
  createContainer,
  createMemoryStorage,
  type IncomingEvent,
  isSubstateError,
  type OutboundEmitter,
  type SubjectStorage,
  type SubstateEvent,
} from '@substate/core'
import { describe, expect, it } from 'vitest'

let seq = 0
const incoming = (subject: string, type = 'tick', payload?: unknown): IncomingEvent => ({
  id: `e${seq++}`,
  source: 'test',
  type,
  subject,
  payload,
})

/** An emitter that records what it was sent; fails while `down`. */
function recorder(name = 'sink'): OutboundEmitter & { sent: SubstateEvent[]; down: boolean } {
  const out = {
    name,
    sent: [] as SubstateEvent[],
    down: false,
    async send(event: SubstateEvent) {
      if (out.down) throw new Error('sink down')
      out.sent.push(event)
    },
  }
  return out
}

describe('units of work: serializable, all or nothing', () => {
  it('bank transfers between 5 accounts with plain get/set conserve the total (400 concurrent units)', async () => {
    const storage = createMemoryStorage()
    const c = createContainer({ storage, concurrency: 64 })
    for (let i = 0; i < 5; i++) await c.subject(`acct:${i}`).set('balance', 100, { cache: false })
    c.on('transfer', async (ctx) => {
      const { from, to, amount } = ctx.payload as { from: string; to: string; amount: number }
      const a = c.subject(from)
      const b = c.subject(to)
      const fromBalance = await a.get<number>('balance')
      const toBalance = await b.get<number>('balance')
      if (fromBalance < amount) return // refused: not enough money
      await new Promise((r) => setImmediate(r)) // let other units interleave
      await a.set('balance', fromBalance - amount)
      await b.set('balance', toBalance + amount)
    })
    const results = await Promise.all(
      Array.from({ length: 400 }, (_, i) => {
        const from = i % 5
        const to = (i * 7 + 1) % 5 === from ? (from + 1) % 5 : (i * 7 + 1) % 5
        return c.receive(
          incoming(`transfer:${i}`, 'transfer', {
            from: `acct:${from}`,
            to: `acct:${to}`,
            amount: 1 + (i % 30),
          }),
        )
      }),
    )
    expect(results.filter((r) => r.status !== 'handled')).toEqual([])
    let total = 0
    for (let i = 0; i < 5; i++) {
      const { props } = await storage.load(`acct:${i}`)
      expect(props.balance).toBeGreaterThanOrEqual(0)
      total += props.balance as number
    }
    expect(total).toBe(500)
    await c.close()
  })

  it('a unit whose commit fails stores nothing of any subject, and its redelivery applies once', async () => {
    const inner = createMemoryStorage()
    let down = true
    const storage: SubjectStorage = {
      ...inner,
      commitUnit: (u) => (down ? Promise.reject(new Error('disk full')) : inner.commitUnit!(u)),
    }
    const c = createContainer({ storage })
    c.on('move', async (ctx) => {
      await c.subject('a').set('n', (n = 0) => n + 1)
      await c.subject('b').set('n', (n = 0) => n + 1)
      await ctx.emit('moved')
    })
    const seen: string[] = []
    c.events$.subscribe((e) => seen.push(e.type))
    const e = incoming('a', 'move')
    const r = await c.receive(e)
    expect(r.status).toBe('failed')
    expect(isSubstateError(r.error, 'STORAGE')).toBe(true)
    expect(await inner.load('a')).toEqual({ props: {}, ext: {} })
    expect(await inner.load('b')).toEqual({ props: {}, ext: {} })
    expect(seen).toEqual([]) // nothing of the failed unit was published
    expect(await c.subject('a').get('n', { default: 0 })).toBe(0)
    down = false
    expect((await c.receive(e)).status).toBe('handled')
    expect((await c.receive(e)).status).toBe('duplicate')
    expect((await inner.load('a')).props).toEqual({ n: 1 })
    expect((await inner.load('b')).props).toEqual({ n: 1 })
    expect(seen).toEqual(['move', 'subject-property-changed', 'subject-property-changed', 'moved'])
    await c.close()
  })

  it('a retried handler attempt leaves nothing behind: its writes, events and sends are undone', async () => {
    const c = createContainer()
    const sink = recorder()
    c.route('out.*', sink)
    let attempts = 0
    c.on('work', { retry: { attempts: 3, backoff: { initial: 1 } } }, async (ctx) => {
      attempts++
      await ctx.subject.set(`try${attempts}`, true)
      await ctx.emit('out.sent', { attempt: attempts })
      if (attempts < 2) throw new Error('first attempt fails')
    })
    const seen: string[] = []
    c.events$.subscribe((e) => seen.push(`${e.type}:${e.propertyName ?? ''}`))
    expect((await c.receive(incoming('w', 'work'))).status).toBe('handled')
    expect(c.subject('w').toJSON().props).toEqual({ try2: true })
    expect(sink.sent.map((e) => e.payload)).toEqual([{ attempt: 2 }])
    expect(seen).toEqual(['work:', 'subject-property-changed:try2', 'out.sent:'])
    await c.close()
  })

  it('outbound events leave once, after the commit, for the final run only, with deterministic ids', async () => {
    const storage = createMemoryStorage()
    const c = createContainer({ storage })
    const sink = recorder()
    c.route('order.*', sink, { policy: 'direct' })
    let failOnce = true
    c.on('order', async (ctx) => {
      await ctx.subject.set('status', 'placed')
      await ctx.emit('order.placed', { id: ctx.subject.name })
    })
    c.on('order', async () => {
      if (failOnce) {
        failOnce = false
        throw new Error('the second handler fails once')
      }
    })
    c.onError(() => {})
    const e = incoming('order:1', 'order')
    expect((await c.receive(e)).status).toBe('failed')
    expect(sink.sent).toEqual([]) // nothing left before the commit
    expect((await c.receive(e)).status).toBe('handled')
    expect((await c.receive(e)).status).toBe('duplicate')
    expect(sink.sent).toHaveLength(1)
    const id = sink.sent[0]!.id
    // The same unit run again elsewhere derives the same id (a receiver dedups a re-send).
    const other = createContainer({ storage: createMemoryStorage() })
    const sink2 = recorder()
    other.route('order.*', sink2, { policy: 'direct' })
    other.on('order', async (ctx) => {
      await ctx.subject.set('status', 'placed')
      await ctx.emit('order.placed', { id: ctx.subject.name })
    })
    await other.receive(e)
    expect(sink2.sent.map((s) => s.id)).toEqual([id])
    expect(await storage.outbox!.size()).toBe(0) // delivered: removed from the outbox
    await c.close()
    await other.close()
  })

  it('a send that failed after the commit stays in the outbox and is relayed by another container', async () => {
    const storage = createMemoryStorage()
    const sink = recorder('sink')
    sink.down = true
    // A replica that stops (its storage stays open for the other one, as a shared Redis would).
    const a = createContainer({
      storage: { ...storage, close: async () => {} },
      outbox: { poll: 10, lease: 30 },
    })
    a.onError(() => {})
    a.route('alert.*', sink)
    a.on('reading', async (ctx) => {
      await ctx.subject.set('v', ctx.payload as number)
      await ctx.emit('alert.high')
    })
    expect((await a.receive(incoming('dev', 'reading', 99))).status).toBe('handled')
    const report = await a.close()
    expect(report.outbox).toBe(1) // still to be delivered
    expect(sink.sent).toEqual([])
    sink.down = false
    const b = createContainer({ storage, outbox: { poll: 10, lease: 30 } })
    b.route('alert.*', sink)
    await b.start()
    await expect.poll(() => sink.sent.length, { timeout: 5000 }).toBe(1)
    expect(sink.sent[0]).toMatchObject({ type: 'alert.high', subject: 'dev' })
    await expect.poll(() => storage.outbox!.size(), { timeout: 5000 }).toBe(0)
    await b.close()
  })

  it('fails a unit that keeps conflicting past conflictTimeout, with a ConflictError', async () => {
    const inner = createMemoryStorage()
    const storage: SubjectStorage = {
      ...inner,
      // Another process writes the subject before every commit.
      async commitUnit(u) {
        await inner.commit('hot', [
          { op: 'update', kind: 'prop', name: 'n', update: (n) => ((n as number) ?? 0) + 1 },
        ])
        return inner.commitUnit!(u)
      },
    }
    const c = createContainer({ storage, conflictTimeout: 50 })
    c.on('read', async () => {
      await c.subject('hot').get('n', { default: 0 })
      await c.subject('out').set('x', (x = 0) => x + 1)
    })
    const r = await c.receive(incoming('r', 'read'))
    expect(r.status).toBe('failed')
    expect(isSubstateError(r.error, 'CONFLICT')).toBe(true)
    expect(await inner.load('out')).toEqual({ props: {}, ext: {} })
    await c.close()
  })

  it('received property events carry property name, old and new value from the payload', async () => {
    const c = createContainer()
    const seen: unknown[] = []
    c.on('subject-property-changed', (ctx) => {
      seen.push([ctx.propertyName, ctx.oldValue, ctx.newValue])
    })
    c.on('subject-property-deleted', (ctx) => {
      seen.push([ctx.propertyName, ctx.oldValue, ctx.newValue])
    })
    await c.receive({
      ...incoming('dev:1', 'subject-property-changed'),
      payload: { property_name: 'cpu', old_value: 10, value: 95 },
    })
    await c.receive({
      ...incoming('dev:1', 'subject-property-deleted'),
      payload: { property_name: 'cpu', old_value: 95 },
    })
    expect(seen).toEqual([
      ['cpu', 10, 95],
      ['cpu', 95, undefined],
    ])
    await c.close()
  })

  it('timers scheduled in a unit are stored with its commit, and not at all by a discarded run', async () => {
    const storage = createMemoryStorage()
    const c = createContainer({ storage })
    c.onError(() => {})
    let fail = true
    c.on('arm', async (ctx) => {
      await ctx.subject.schedule('later', { in: 60_000 })
      if (fail) throw new Error('fails once')
    })
    const e = incoming('dev', 'arm')
    expect((await c.receive(e)).status).toBe('failed')
    expect(Object.keys((await storage.load('substate:timers')).props)).toHaveLength(0)
    fail = false
    expect((await c.receive(e)).status).toBe('handled')
    expect(Object.keys((await storage.load('substate:timers')).props)).toHaveLength(1)
    await c.close()
  })

  it('refresh() shows what another replica stored; get(p, { cache: false }) reads storage', async () => {
    const storage = createMemoryStorage()
    const shared = { ...storage, close: async () => {} }
    const a = createContainer({ storage: shared })
    const b = createContainer({ storage: shared })
    await b.subject('dev').set('cpu', 10, { cache: false })
    expect(await b.subject('dev').get('cpu')).toBe(10)
    a.on('m', async (ctx) => ctx.subject.set('cpu', ctx.payload as number))
    expect((await a.receive(incoming('dev', 'm', 95))).status).toBe('handled')
    expect(await b.subject('dev').get('cpu')).toBe(10) // b's cache
    expect(await b.subject('dev').get('cpu', { cache: false })).toBe(95)
    await b.subject('dev').refresh()
    expect(await b.subject('dev').get('cpu')).toBe(95)
    expect(b.subject('dev').toJSON().props).toEqual({ cpu: 95 })
    await a.close()
    await b.close()
  })

  it('keys events by source and id unambiguously: a naive join would make these two one', async () => {
    const c = createContainer()
    let runs = 0
    c.on('tick', () => {
      runs++
    })
    const a = await c.receive({ id: 'x\ny', source: 'src', type: 'tick', subject: 's' })
    const b = await c.receive({ id: 'y', source: 'src\nx', type: 'tick', subject: 's' })
    expect([a.status, b.status]).toEqual(['handled', 'handled'])
    expect(runs).toBe(2)
    // A long id is remembered by a digest (the dedup window holds bounded keys): still a duplicate.
    const long = 'i'.repeat(100_000)
    expect((await c.receive({ id: long, source: 'src', type: 'tick', subject: 's' })).status).toBe(
      'handled',
    )
    expect((await c.receive({ id: long, source: 'src', type: 'tick', subject: 's' })).status).toBe(
      'duplicate',
    )
    await c.close()
  })
})
