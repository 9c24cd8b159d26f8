import {
  createContainer,
  createMemoryStorage,
  type IncomingEvent,
  isSubstateError,
  type SubjectStorage,
} from '@substate/core'
import { describe, expect, it } from 'vitest'

let n = 0
const incoming = (subject: string, type = 'tick', payload?: unknown): IncomingEvent => ({
  id: `evt-${n++}`,
  source: 'test',
  type,
  subject,
  payload,
})

describe('units of work (receive)', () => {
  it('stores every subject the unit touched before resolving handled', async () => {
    const storage = createMemoryStorage()
    const c = createContainer({ storage })
    c.handlers().on('tick', async (ctx) => {
      await ctx.subject.set('n', (v = 0) => v + 1)
      await c.subject('fleet').set('total', (v = 0) => v + 1)
    })
    const r = await c.receive(incoming('device:1'))
    expect(r.status).toBe('handled')
    expect((await storage.load('device:1')).props).toEqual({ n: 1 })
    expect((await storage.load('fleet')).props).toEqual({ total: 1 })
  })

  it('re-seeds the origin id and keeps source, id, extensions', async () => {
    const c = createContainer()
    let seen: unknown
    c.handlers().on('tick', (ctx) => {
      seen = ctx.event
    })
    await c.receive({
      ...incoming('d'),
      originId: 'origin-from-afar',
      extensions: { tenant: 'acme' },
    })
    expect(seen).toMatchObject({
      originId: 'origin-from-afar',
      source: 'test',
      extensions: { tenant: 'acme' },
    })
  })

  it('a failed unit stores nothing it cached; the redelivery is handled once', async () => {
    const storage = createMemoryStorage()
    const c = createContainer({ storage })
    c.onError(() => {})
    let attempts = 0
    c.handlers().on('tick', async (ctx) => {
      await ctx.subject.set('n', (v = 0) => v + 1)
      if (++attempts === 1) throw new Error('first delivery fails')
    })
    const event = incoming('d:1')
    const first = await c.receive(event)
    expect(first.status).toBe('failed')
    expect(first.error?.message).toMatch(/first delivery fails/)
    expect((await storage.load('d:1')).props).toEqual({})
    expect((await c.receive(event)).status).toBe('handled')
    expect((await c.receive(event)).status).toBe('duplicate')
    expect((await storage.load('d:1')).props).toEqual({ n: 1 })
    expect(attempts).toBe(2)
  })

  it('concurrent deliveries of one event are handled once', async () => {
    const c = createContainer()
    let handled = 0
    c.handlers().on('tick', async () => {
      handled++
      await new Promise((r) => setTimeout(r, 5))
    })
    const e = incoming('d')
    const results = await Promise.all([c.receive(e), c.receive(e), c.receive(e)])
    expect(results.map((r) => r.status).sort()).toEqual(['duplicate', 'duplicate', 'handled'])
    expect(handled).toBe(1)
  })

  it('a storage failure at the end of the unit fails it (nack), and nothing is half-kept', async () => {
    const inner = createMemoryStorage()
    let down = true
    const storage: SubjectStorage = {
      ...inner,
      commit: (s, ch, o) =>
        down ? Promise.reject(new Error('connection refused')) : inner.commit(s, ch, o),
      commitUnit: (u) =>
        down ? Promise.reject(new Error('connection refused')) : inner.commitUnit!(u),
    }
    const c = createContainer({ storage })
    c.handlers().on('tick', (ctx) => ctx.subject.set('n', (v = 0) => v + 1))
    const e = incoming('d')
    const r = await c.receive(e)
    expect(r.status).toBe('failed')
    expect(isSubstateError(r.error, 'STORAGE')).toBe(true)
    expect(c.subject('d').dirty).toBe(false) // discarded, not left to double-apply
    down = false
    expect((await c.receive(e)).status).toBe('handled')
    expect((await inner.load('d')).props).toEqual({ n: 1 })
  })

  it('handles one subject in arrival order, different subjects concurrently', async () => {
    const c = createContainer({ concurrency: 8 })
    const log: string[] = []
    let running = 0
    let maxRunning = 0
    c.handlers().on('tick', async (ctx) => {
      running++
      maxRunning = Math.max(maxRunning, running)
      log.push(`${ctx.subject.name}:${String(ctx.payload)}`)
      await new Promise((r) => setTimeout(r, 2 + Math.random() * 5))
      running--
    })
    const events = Array.from({ length: 50 }, (_, i) => incoming(`s${i % 5}`, 'tick', i))
    const results = await Promise.all(events.map((e) => c.receive(e)))
    expect(results.every((r) => r.status === 'handled')).toBe(true)
    for (let s = 0; s < 5; s++) {
      const order = log.filter((l) => l.startsWith(`s${s}:`)).map((l) => Number(l.split(':')[1]))
      expect(order).toEqual([...order].sort((a, b) => a - b))
    }
    expect(maxRunning).toBeGreaterThan(1)
    expect(maxRunning).toBeLessThanOrEqual(5)
  })

  it('nested emits inside a unit are re-entrant (no deadlock on the own subject)', async () => {
    const c = createContainer()
    c.handlers().on('tick', async (ctx) => {
      await ctx.emit('tock')
    })
    c.handlers().on('tock', async (ctx) => {
      await ctx.subject.set('done', true)
    })
    expect((await c.receive(incoming('d'))).status).toBe('handled')
    expect(await c.subject('d').get('done')).toBe(true)
  })

  it('dead-lettered failures count as handled only with a durable sink', async () => {
    const mk = (durable: boolean) => {
      const c = createContainer({ deadLetter: { durable, put: async () => {} } })
      c.onError(() => {})
      c.handlers().on('tick', () => {
        throw new Error('always')
      })
      return c
    }
    expect((await mk(true).receive(incoming('d'))).status).toBe('handled')
    expect((await mk(false).receive(incoming('d'))).status).toBe('failed')
  })
})

describe('close', () => {
  it('stops intake, drains in-flight work, stores dirty subjects, reports', async () => {
    const storage = createMemoryStorage()
    const c = createContainer({ storage })
    let finished = false
    const order: string[] = []
    c.onClose(() => void order.push('onClose hook'))
    c.handlers().on('slow', async () => {
      await new Promise((r) => setTimeout(r, 30))
      finished = true
    })
    const inflight = c.handlers().emit('slow', 's')
    await c.subject('dirty').set('x', 1)
    const report = await c.close()
    expect(finished).toBe(true)
    expect((await inflight).ok).toBe(true)
    expect(report).toMatchObject({ drained: 1, stored: 1, timedOut: false, errors: [] })
    expect(order).toEqual(['onClose hook'])
    await expect(c.handlers().emit('x', 's')).rejects.toSatisfy((e) =>
      isSubstateError(e, 'SHUTDOWN'),
    )
    await expect(c.receive(incoming('s'))).rejects.toSatisfy((e) => isSubstateError(e, 'SHUTDOWN'))
  })

  it('aborts ctx.signal when work outlives drainTimeout', async () => {
    const c = createContainer()
    let aborted = false
    c.handlers().on('stuck', async (ctx) => {
      await new Promise<void>((resolve) => {
        ctx.signal.addEventListener('abort', () => {
          aborted = true
          resolve()
        })
      })
    })
    const p = c.handlers().emit('stuck', 's')
    const report = await c.close({ drainTimeout: 20 })
    expect(report.timedOut).toBe(true)
    expect(aborted).toBe(true)
    await p
  })
})

describe('duplicate window', () => {
  it('forgets the oldest handled ids beyond dedupWindow', async () => {
    const c = createContainer({ dedupWindow: 3 })
    let handled = 0
    c.handlers().on('tick', () => void handled++)
    const events = Array.from({ length: 4 }, () => incoming('d'))
    for (const e of events) await c.receive(e)
    expect((await c.receive(events[3]!)).status).toBe('duplicate')
    expect((await c.receive(events[0]!)).status).toBe('handled') // forgotten: handled again
    expect(handled).toBe(5)
  })
})

describe('units of work sharing a subject', () => {
  it("a unit never stores another unit's writes: a failed unit's redelivery has exactly one effect", async () => {
    const storage = createMemoryStorage()
    const c = createContainer({ storage })
    c.onError(() => {})
    let failNext = true
    c.handlers().on('tick', async (ctx) => {
      await c.subject('shared').set('n', (v = 0) => v + 1)
      if (ctx.subject.name === 's2') {
        await new Promise((r) => setTimeout(r, 30)) // s1's unit finishes and stores meanwhile
        if (failNext) {
          failNext = false
          throw new Error('s2 fails once')
        }
      }
    })
    const e1 = incoming('s1')
    const e2 = incoming('s2')
    const [r1, r2] = await Promise.all([c.receive(e1), c.receive(e2)])
    // s2 failed on data s1 changed meanwhile: that is a conflict, so it ran again (and passed).
    expect([r1.status, r2.status]).toEqual(['handled', 'handled'])
    expect((await storage.load('shared')).props).toEqual({ n: 2 })
    expect((await c.receive(e2)).status).toBe('duplicate') // a redelivery: no second effect
    expect((await storage.load('shared')).props).toEqual({ n: 2 })
    expect(await c.subject('shared').get('n')).toBe(2)
  })

  it("a failed unit drops only its own writes; a concurrent unit's pending writes survive", async () => {
    const storage = createMemoryStorage()
    const c = createContainer({ storage })
    c.onError(() => {})
    c.handlers().on('tick', async (ctx) => {
      await c.subject('shared').set(ctx.subject.name, true)
      await c.subject('shared').set('n', (v = 0) => v + 10)
      await new Promise((r) => setTimeout(r, ctx.subject.name === 'a' ? 5 : 40))
      if (ctx.subject.name === 'a') throw new Error('a fails')
    })
    const changes: string[] = []
    c.events$.subscribe((e) => {
      if (e.subject === 'shared') changes.push(`${e.propertyName}:${e.oldValue}->${e.newValue}`)
    })
    const [ra, rb] = await Promise.all([c.receive(incoming('a')), c.receive(incoming('b'))])
    expect([ra.status, rb.status]).toEqual(['failed', 'handled'])
    expect((await storage.load('shared')).props).toEqual({ b: true, n: 10 })
    expect(c.subject('shared').toJSON().props).toEqual({ b: true, n: 10 })
    // Only the committed unit's events: a failed run leaves nothing behind, events included.
    expect(changes.sort()).toEqual(['b:undefined->true', 'n:undefined->10'])
  })

  it('a unit commits its own writes only; writes made outside units stay for store()', async () => {
    const storage = createMemoryStorage()
    const c = createContainer({ storage })
    await c.subject('shared').set('outside', 1) // pending, written outside any unit
    c.handlers().on('tick', async (ctx) => {
      expect(await c.subject('shared').has('outside')).toBe(false) // never read uncommitted
      await c.subject('shared').set('inside', 2)
      await c.subject('shared').store() // in a unit: its commit stores it
      ctx.metadata.set('ran', true)
    })
    expect((await c.receive(incoming('x'))).status).toBe('handled')
    expect((await storage.load('shared')).props).toEqual({ inside: 2 })
    expect(c.subject('shared').toJSON().props).toEqual({ outside: 1, inside: 2 })
    await c.subject('shared').store()
    expect((await storage.load('shared')).props).toEqual({ outside: 1, inside: 2 })
  })
})
