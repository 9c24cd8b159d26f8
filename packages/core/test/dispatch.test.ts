import {
  CascadeDepthError,
  createContainer,
  createMemoryStorage,
  type DeadLetter,
  type EventContext,
  type HandlerFailure,
  isSubstateError,
  SUBJECT_DELETED,
  SUBJECT_PROPERTY_CHANGED,
} from '@substate/core'
import { describe, expect, it } from 'vitest'

const quiet = (c: ReturnType<typeof createContainer>): HandlerFailure[] => {
  const failures: HandlerFailure[] = []
  c.onError((f) => failures.push(f))
  return failures
}

describe('emit', () => {
  it('resolves after every handler and every cascade, depth-first', async () => {
    const c = createContainer()
    const { on, emit } = c.handlers()
    const log: string[] = []
    on('a', async (ctx) => {
      log.push('a1 start')
      await ctx.emit('b')
      log.push('a1 end')
    })
    on('a', async () => {
      await new Promise((r) => setTimeout(r, 5))
      log.push('a2')
    })
    on('b', async (ctx) => {
      await new Promise((r) => setTimeout(r, 5))
      log.push('b')
      await ctx.subject.set('x', 1)
    })
    on(SUBJECT_PROPERTY_CHANGED, async () => {
      await new Promise((r) => setTimeout(r, 5))
      log.push('changed')
    })
    const result = await emit('a', 's:1')
    expect(log).toEqual(['a1 start', 'b', 'changed', 'a1 end', 'a2'])
    expect(result).toMatchObject({ handled: 2, failures: [], ok: true })
  })

  it('passes type, subject, payload (a copy), extra and a shared metadata map', async () => {
    const c = createContainer({ source: 'test-svc' })
    const { on, emit, middleware } = c.handlers()
    let seen: EventContext | undefined
    middleware(async (ctx, next) => {
      ctx.metadata.set('mw', 1)
      await next()
    })
    on('t.*', (ctx) => {
      seen = ctx
    })
    const payload = { level: 3 }
    const r = await emit('t.x', 'dev:1', payload, { extra: { who: 'me' } })
    payload.level = 9
    expect(seen?.type).toBe('t.x')
    expect(seen?.subject.name).toBe('dev:1')
    expect(seen?.payload).toEqual({ level: 3 })
    expect(seen?.extra).toEqual({ who: 'me' })
    expect(seen?.metadata.get('mw')).toBe(1)
    expect(seen?.id).toBe(r.event.id)
    expect(r.event.source).toBe('test-svc')
  })

  it('rejects a payload that is not JSON with a TypeError, synchronously', () => {
    const { emit } = createContainer().handlers()
    expect(() => emit('x', 's', { when: new Date() })).toThrow(TypeError)
    expect(() => emit('', 's')).toThrow(TypeError)
  })
})

describe('filters', () => {
  it('runs a handler only when all filters pass; sync and async filters', async () => {
    const { on, when, emit } = createContainer().handlers()
    const seen: string[] = []
    on(
      'e',
      when((ctx) => ctx.subject.name.startsWith('device:')),
      when(async (ctx) => ctx.payload === 1),
      (ctx) => {
        seen.push(ctx.subject.name)
      },
    )
    await emit('e', 'device:1', 1)
    await emit('e', 'device:2', 2)
    await emit('e', 'user:1', 1)
    expect(seen).toEqual(['device:1'])
  })

  it('counts a throwing filter as false and reports it', async () => {
    const c = createContainer()
    const failures = quiet(c)
    const { on, when, emit } = c.handlers()
    let ran = 0
    on(
      'e',
      when(() => {
        throw new Error('bad filter')
      }),
      () => void ran++,
    )
    on(
      'e',
      when(async () => {
        throw new Error('bad async filter')
      }),
      () => void ran++,
    )
    const r = await emit('e', 's')
    expect(ran).toBe(0)
    expect(r.ok).toBe(true)
    expect(failures.map((f) => f.handler)).toEqual([
      expect.stringMatching(/^filter:/),
      expect.stringMatching(/^filter:/),
    ])
  })
})

describe('middleware', () => {
  it('wraps each event once (not once per handler), first registered outermost', async () => {
    const { on, middleware, emit } = createContainer().handlers()
    const log: string[] = []
    middleware(async (ctx, next) => {
      log.push(`outer>${ctx.type}`)
      await next()
      log.push('outer<')
    })
    middleware(async (_ctx, next) => {
      log.push('inner>')
      await next()
      log.push('inner<')
    })
    on('e', () => void log.push('h1'))
    on('e', () => void log.push('h2'))
    await emit('e', 's')
    expect(log).toEqual(['outer>e', 'inner>', 'h1', 'h2', 'inner<', 'outer<'])
  })

  it('runs when no handler matches, and can short-circuit', async () => {
    const { on, middleware, emit } = createContainer().handlers()
    const types: string[] = []
    let handled = 0
    middleware(async (ctx, next) => {
      types.push(ctx.type)
      if (ctx.type !== 'blocked') await next()
    })
    on('**', () => void handled++)
    await emit('nobody.listens', 's')
    await emit('blocked', 's')
    expect(types).toEqual(['nobody.listens', 'blocked'])
    expect(handled).toBe(1)
  })

  it('reports next() called twice as a middleware failure', async () => {
    const c = createContainer()
    quiet(c)
    const { middleware, emit } = c.handlers()
    middleware(async (_ctx, next) => {
      await next()
      await next()
    })
    const r = await emit('e', 's')
    expect(r.ok).toBe(false)
    expect(r.failures[0]?.handler).toBe('middleware')
    expect(String(r.failures[0]?.error.cause)).toMatch(/next\(\) called multiple times/)
  })
})

describe('failures are never silent', () => {
  it('isolates a failing handler: the next runs, the caller sees the failure, onError sees it', async () => {
    const c = createContainer()
    const failures = quiet(c)
    const { on, emit } = c.handlers()
    let second = false
    on('e', { name: 'breaks' }, () => {
      throw new Error('boom')
    })
    on('e', () => {
      second = true
    })
    const r = await emit('e', 's:1')
    expect(second).toBe(true)
    expect(r.ok).toBe(false)
    expect(r.handled).toBe(2)
    expect(r.failures).toHaveLength(1)
    expect(r.failures[0]).toMatchObject({ handler: 'breaks', attempts: 1, deadLettered: false })
    expect(isSubstateError(r.failures[0]!.error, 'HANDLER')).toBe(true)
    expect((r.failures[0]!.error.cause as Error).message).toBe('boom')
    expect(failures).toHaveLength(1)
  })

  it('lists failures of nested cascades in the top-level result', async () => {
    const c = createContainer()
    quiet(c)
    const { on, emit } = c.handlers()
    on('a', async (ctx) => {
      await ctx.subject.set('x', 1)
    })
    on(SUBJECT_PROPERTY_CHANGED, { name: 'deep' }, () => {
      throw new Error('deep failure')
    })
    const r = await emit('a', 's')
    expect(r.failures.map((f) => f.handler)).toEqual(['deep'])
  })

  it("rejects with an AggregateError under errorMode 'throw'", async () => {
    const c = createContainer({ errorMode: 'throw' })
    quiet(c)
    const { on, emit } = c.handlers()
    on('e', () => {
      throw new Error('one')
    })
    on('e', () => {
      throw new Error('two')
    })
    const err = await emit('e', 's').catch((e: unknown) => e)
    expect(err).toBeInstanceOf(AggregateError)
    expect((err as AggregateError).errors).toHaveLength(2)
    // set() at the top level rejects the same way, after the value was applied
    on(SUBJECT_PROPERTY_CHANGED, () => {
      throw new Error('three')
    })
    await expect(c.subject('s').set('p', 1)).rejects.toBeInstanceOf(AggregateError)
    expect(await c.subject('s').get('p')).toBe(1)
  })

  it("rejects flush() and a store() whose correction event fails, under errorMode 'throw'", async () => {
    const storage = createMemoryStorage()
    const c = createContainer({ storage, errorMode: 'throw' })
    const other = createContainer({ storage })
    quiet(c)
    c.on(SUBJECT_DELETED, () => {
      throw new Error('on delete')
    })
    await c.subject('gone').set('p', 1, { muted: true })
    await c.subject('gone').store()
    await expect(c.subject('gone').flush()).rejects.toBeInstanceOf(AggregateError)

    // Another process increments in between: store() takes the stored value and announces it.
    c.on(SUBJECT_PROPERTY_CHANGED, (ctx) => {
      if (ctx.newValue === 11) throw new Error('on the correction')
    })
    const s = c.subject('n')
    await s.set('n', (n = 0) => n + 1) // cached: 1, pending
    await other.subject('n').set('n', 10, { cache: false })
    await expect(s.store()).rejects.toBeInstanceOf(AggregateError)
    expect(await s.get('n')).toBe(11)
    expect((await storage.load('n')).props).toEqual({ n: 11 })
  })

  it('retries with backoff, then dead-letters; a success on retry is no failure', async () => {
    const dead: DeadLetter[] = []
    const c = createContainer({
      deadLetter: { durable: true, put: async (d) => void dead.push(d) },
    })
    quiet(c)
    const { on, emit } = c.handlers()
    let flaky = 0
    on('flaky', { retry: { attempts: 3, backoff: { initial: 1 } } }, () => {
      if (++flaky < 3) throw new Error('not yet')
    })
    on('broken', { name: 'broken', retry: { attempts: 2, backoff: { initial: 1 } } }, () => {
      throw new Error('never')
    })
    const ok = await emit('flaky', 's')
    expect(ok.ok).toBe(true)
    expect(flaky).toBe(3)
    const r = await emit('broken', 's')
    expect(r.failures[0]).toMatchObject({
      handler: 'broken',
      attempts: 2,
      deadLettered: true,
      durable: true,
    })
    expect(r.ok).toBe(true) // dead-lettered failures count as handled
    expect(dead).toHaveLength(1)
    expect(dead[0]).toMatchObject({ handler: 'broken', attempts: 2, event: { type: 'broken' } })
    const m = c.metrics.snapshot()
    expect(m.broken).toMatchObject({ processed: 1, failed: 1, retried: 1 })
  })

  it('times a handler out and aborts its signal', async () => {
    const c = createContainer()
    quiet(c)
    const { on, emit } = c.handlers()
    let aborted = false
    on('slow', { name: 'slow', timeout: 20 }, async (ctx) => {
      ctx.signal.addEventListener('abort', () => {
        aborted = true
      })
      await new Promise((r) => setTimeout(r, 200))
    })
    const r = await emit('slow', 's')
    expect(aborted).toBe(true)
    expect(isSubstateError(r.failures[0]?.error.cause, 'TIMEOUT')).toBe(true)
  })
})

describe('cascades', () => {
  it('fails a runaway loop with CascadeDepthError instead of overflowing the stack', async () => {
    const c = createContainer({ maxDepth: 10 })
    quiet(c)
    const { on, emit } = c.handlers()
    let depth = 0
    on('loop', async (ctx) => {
      depth++
      await ctx.emit('loop')
    })
    const r = await emit('loop', 's')
    expect(depth).toBe(11)
    expect(r.ok).toBe(false)
    expect(r.failures.some((f) => f.error.cause instanceof CascadeDepthError)).toBe(true)
  })

  it('carries one origin id through nested emits and property events, a new one per top-level emit', async () => {
    const c = createContainer()
    const { on, emit } = c.handlers()
    const origins: Array<[string, string]> = []
    on('**', (ctx) => void origins.push([ctx.type, ctx.originId]))
    on('start', async (ctx) => {
      await ctx.emit('nested')
      await ctx.subject.set('p', Math.random())
      await new Promise((r) => setTimeout(r, 1))
      await c.subject('other').set('q', 1) // still inside the cascade
    })
    const r1 = await emit('start', 's')
    const r2 = await emit('start', 's')
    const first = origins.filter(([, o]) => o === r1.event.originId)
    expect(first.map(([t]) => t)).toEqual([
      'start',
      'nested',
      SUBJECT_PROPERTY_CHANGED,
      SUBJECT_PROPERTY_CHANGED,
    ])
    expect(r2.event.originId).not.toBe(r1.event.originId)
  })
})

describe('observables', () => {
  it('events$ sees every event; select() filters by glob; close() completes them', async () => {
    const c = createContainer()
    const all: string[] = []
    const devices: string[] = []
    let completed = false
    c.events$.subscribe({ next: (e) => all.push(e.type), complete: () => (completed = true) })
    c.select('device.*').subscribe((e) => devices.push(e.type))
    const { emit } = c.handlers()
    await emit('device.alert', 'd')
    await emit('user.created', 'u')
    await c.subject('d').set('x', 1)
    expect(all).toEqual(['device.alert', 'user.created', SUBJECT_PROPERTY_CHANGED])
    expect(devices).toEqual(['device.alert'])
    await c.close()
    expect(completed).toBe(true)
  })
})

describe('outbound routes and targets', () => {
  const recorder = (name: string, sent: string[], fail = false) => ({
    name,
    async send(e: { type: string; subject: string }) {
      if (fail) throw new Error(`${name} is down`)
      sent.push(`${name}:${e.type}:${e.subject}`)
    },
    flushed: 0,
    async flush() {
      this.flushed++
    },
  })

  it("routes by glob: 'both' keeps local handlers, 'direct' skips them; middleware runs once", async () => {
    const c = createContainer()
    const { on, emit, middleware } = c.handlers()
    const sent: string[] = []
    const local: string[] = []
    let mw = 0
    middleware(async (_ctx, next) => {
      mw++
      await next()
    })
    c.route('alerts.*', recorder('hook', sent), { policy: 'both' })
    c.route('remote.*', recorder('far', sent), { policy: 'direct' })
    on('**', (ctx) => void local.push(ctx.type))
    await emit('alerts.fire', 's')
    await emit('remote.only', 's')
    await emit('plain', 's')
    expect(sent).toEqual(['hook:alerts.fire:s', 'far:remote.only:s'])
    expect(local).toEqual(['alerts.fire', 'plain'])
    expect(mw).toBe(3)
  })

  it('a failed delivery is a failure the caller sees', async () => {
    const c = createContainer()
    quiet(c)
    c.route('x', recorder('down', [], true))
    const r = await c.handlers().emit('x', 's')
    expect(r.ok).toBe(false)
    expect(r.failures[0]?.handler).toBe('route:down')
  })

  it('emit(..., { dispatchUrl | topic }) sends only remotely, one emitter per target, flushed on close', async () => {
    const sent: string[] = []
    const made: string[] = []
    const emitters: Array<ReturnType<typeof recorder>> = []
    const c = createContainer({
      targets: {
        dispatchUrl: (url) => {
          made.push(url)
          const e = recorder(url, sent)
          emitters.push(e)
          return e
        },
      },
    })
    let local = 0
    c.handlers().on('**', () => void local++)
    await c.handlers().emit('a', 's', undefined, { dispatchUrl: 'http://127.0.0.1:1/x' })
    await c.handlers().emit('b', 's', undefined, { dispatchUrl: 'http://127.0.0.1:1/x' })
    expect(sent).toEqual(['http://127.0.0.1:1/x:a:s', 'http://127.0.0.1:1/x:b:s'])
    expect(made).toHaveLength(1)
    expect(local).toBe(0)
    await expect(c.handlers().emit('a', 's', undefined, { topic: 't' })).rejects.toThrow(
      /targets: \{ topic/,
    )
    await c.close()
    expect(emitters[0]?.flushed).toBe(1)
  })
})
