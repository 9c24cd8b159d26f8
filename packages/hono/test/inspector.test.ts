import {
  type Container,
  createContainer,
  createMemoryDeadLetters,
  createMemoryStorage,
  type DeadLetter,
  SUBJECT_PROPERTY_CHANGED,
  storageDeadLetters,
} from '@substate/core'
import { createInspector, createReceiver } from '@substate/hono'
import { Hono } from 'hono'
import { afterEach, describe, expect, it } from 'vitest'
import { listen } from './_support.js'

// biome-ignore lint/suspicious/noExplicitAny: JSON of several shapes, checked by the assertions
type Json = any

/** GET through `app.request`, answered JSON. */
async function get(app: Hono, path: string): Promise<Json> {
  return (await app.request(path)).json()
}

/** Reads named SSE messages (`event:` + JSON `data:`) from a response body, in order. */
function sse(res: Response): { next(): Promise<{ event: string; data: Json }>; cancel(): void } {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader()
  const queue: { event: string; data: Json }[] = []
  const waiting: ((m: { event: string; data: Json }) => void)[] = []
  let buffer = ''
  void (async () => {
    for (;;) {
      const { done, value } = await reader.read().catch(() => ({ done: true, value: '' }))
      if (done) return
      buffer += value
      for (let cut = buffer.indexOf('\n\n'); cut >= 0; cut = buffer.indexOf('\n\n')) {
        const lines = buffer.slice(0, cut).split('\n')
        buffer = buffer.slice(cut + 2)
        const data = lines.find((l) => l.startsWith('data:'))
        if (data === undefined) continue // a keep-alive comment
        const event =
          lines
            .find((l) => l.startsWith('event:'))
            ?.slice(6)
            .trim() ?? 'message'
        const msg = { event, data: JSON.parse(data.slice(5)) }
        const w = waiting.shift()
        if (w) w(msg)
        else queue.push(msg)
      }
    }
  })()
  return {
    next: () =>
      queue.length > 0 ? Promise.resolve(queue.shift()!) : new Promise((r) => waiting.push(r)),
    cancel: () => void reader.cancel().catch(() => {}),
  }
}

describe('createInspector', () => {
  const open: { close(): Promise<unknown> }[] = []
  afterEach(async () => {
    for (const o of open.splice(0).reverse()) await o.close()
  })

  function setup(options: Parameters<typeof createInspector>[1] = {}): {
    container: Container
    app: Hono
    dead: DeadLetter[]
  } {
    const storage = createMemoryStorage()
    const dead: DeadLetter[] = []
    const container = createContainer({
      source: 'inspector-test',
      storage,
      deadLetter: { durable: true, put: async (d) => void dead.push(d) },
    })
    open.push(container)
    container.on('device.reading', async function reading(ctx) {
      await ctx.subject.set('cpu', (ctx.payload as { cpu: number }).cpu)
      await ctx.subject.setExt('model', 'x1')
    })
    container.on(SUBJECT_PROPERTY_CHANGED, async function alert(ctx) {
      if (ctx.propertyName === 'cpu' && (ctx.newValue as number) > 90)
        await ctx.emit('device.alert', { cpu: ctx.newValue })
    })
    container.on(
      'device.alert',
      { name: 'pager', retry: { attempts: 3, backoff: { initial: 1 } } },
      () => {
        throw new Error('pager <unreachable>')
      },
    )
    const app = new Hono()
    app.route('/', createReceiver(container))
    app.route(
      '/inspector',
      createInspector(container, {
        subjects: storage.subjects.bind(storage),
        deadLetters: () => dead,
        ...options,
      }),
    )
    return { container, app, dead }
  }

  const reading = (id: string, subject: string, cpu: number) => ({
    id,
    source: 'tests',
    type: 'device.reading',
    subject,
    payload: { cpu },
  })

  it('serves the page, its script and styles from the package, under a strict CSP', async () => {
    const { app } = setup()
    for (const path of ['/inspector', '/inspector/']) {
      const res = await app.request(path)
      expect(res.status).toBe(200)
      expect(res.headers.get('content-type')).toMatch(/^text\/html/)
      expect(res.headers.get('content-security-policy')).toContain("script-src 'self'")
      expect(res.headers.get('x-content-type-options')).toBe('nosniff')
      const html = await res.text()
      expect(html).toContain('<script src="/inspector/inspector.js"></script>')
      expect(html).toContain('data-base="/inspector/"')
      expect(html).not.toMatch(/https?:\/\//) // no CDN
    }
    const js = await app.request('/inspector/inspector.js')
    expect(js.headers.get('content-type')).toMatch(/^text\/javascript/)
    const script = await js.text()
    expect(script).not.toContain('innerHTML')
    expect(() => new Function(script)).not.toThrow() // it parses
    const css = await app.request('/inspector/inspector.css')
    expect(css.headers.get('content-type')).toMatch(/^text\/css/)
    // basePath is escaped into the page, and used instead of the request's path.
    const proxied = new Hono().route('/', createInspector(setup().container, { basePath: '/a"b/' }))
    const html = await (await proxied.request('/')).text()
    expect(html).toContain('data-base="/a&quot;b/"')
  })

  it('lists subjects by glob from the storage, and reads one fresh', async () => {
    const { container, app } = setup()
    await container.receive(reading('r1', 'device:1', 10))
    await container.receive(reading('r2', 'device:2', 20))
    await container.receive(reading('r3', 'room:1', 30))
    const all = await get(app, '/inspector/api/subjects')
    expect(all).toEqual({
      pattern: '**',
      source: 'storage',
      names: ['device:1', 'device:2', 'room:1'],
      truncated: false,
    })
    const devices = await get(app, '/inspector/api/subjects?pattern=device:*')
    expect(devices.names).toEqual(['device:1', 'device:2'])

    const subject = await get(app, '/inspector/api/subject?name=device%3A1')
    expect(subject).toMatchObject({ name: 'device:1', props: { cpu: 10 }, ext: { model: 'x1' } })
    expect(subject.events.map((e: { type: string }) => e.type)).toEqual([
      'device.reading',
      SUBJECT_PROPERTY_CHANGED,
    ])
    expect((await app.request('/inspector/api/subject')).status).toBe(400)
  })

  it('without a subjects option, lists the subjects seen in events; caps a listing', async () => {
    const container = createContainer({ source: 'seen' })
    open.push(container)
    const app = createInspector(container, { maxSubjects: 2 })
    for (const name of ['a:1', 'a:2', 'a:3', 'b:1']) await container.emit('ping', name)
    const res = await get(app, '/api/subjects?pattern=a:*')
    expect(res.source).toBe('events')
    expect(res.names).toHaveLength(2)
    expect(res.truncated).toBe(true)
  })

  it('records a cascade as a tree with durations, retries and dead-lettered failures', async () => {
    const { container, app } = setup()
    const result = await container.receive({ ...reading('hot', 'device:9', 99), originId: 'o-1' })
    expect(result.status).toBe('handled')
    const { events } = await get(app, '/inspector/api/cascade?origin=o-1')
    const byType = (t: string) => events.filter((e: { type: string }) => e.type === t)
    const [root] = byType('device.reading')
    const [cpu] = byType(SUBJECT_PROPERTY_CHANGED)
    const [alert] = byType('device.alert')
    expect(events).toHaveLength(3) // setExt emits nothing
    expect(root.parentId).toBeNull()
    expect(cpu.parentId).toBe(root.id)
    expect(alert.parentId).toBe(cpu.id)
    for (const e of events) expect(e.durationMs).toBeGreaterThanOrEqual(0)
    expect(root.durationMs).toBeGreaterThanOrEqual(alert.durationMs)
    expect(alert.failures).toEqual([
      {
        handler: 'pager',
        error: 'Error: pager <unreachable>',
        attempts: 3,
        deadLettered: true,
      },
    ])
    expect(JSON.parse(alert.payload)).toEqual({ cpu: 99 })

    const { cascades } = await get(app, '/inspector/api/cascades')
    expect(cascades[0]).toMatchObject({
      originId: 'o-1',
      type: 'device.reading',
      subject: 'device:9',
      events: 3,
      failures: 1,
    })
    expect((await app.request('/inspector/api/cascade')).status).toBe(400)

    const metrics = await get(app, '/inspector/api/metrics')
    expect(metrics.handlers.pager).toMatchObject({ processed: 1, failed: 1, retried: 2 })
    const dead = await get(app, '/inspector/api/dead-letters')
    expect(dead.configured).toBe(true)
    expect(dead.items).toEqual([
      expect.objectContaining({
        handler: 'pager',
        attempts: 3,
        event: expect.objectContaining({ type: 'device.alert', originId: 'o-1' }),
      }),
    ])
  })

  it('parents concurrent nested emits right, and keeps only the last `cascades` dispatches', async () => {
    const container = createContainer({ source: 'fan' })
    open.push(container)
    container.on('fan.out', async (ctx) => {
      await Promise.all([ctx.emit('fan.a'), ctx.emit('fan.b')])
    })
    container.on('fan.a', async (ctx) => {
      await ctx.emit('fan.a.leaf')
    })
    const app = createInspector(container, { cascades: 8 })
    const { event } = await container.emit('fan.out', 'x:1')
    const { events } = await get(app, `/api/cascade?origin=${event.originId}`)
    const parentOf = Object.fromEntries(
      events.map((e: { type: string; parentId: string | null }) => [
        e.type,
        events.find((p: { id: string }) => p.id === e.parentId)?.type ?? null,
      ]),
    )
    expect(parentOf).toEqual({
      'fan.out': null,
      'fan.a': 'fan.out',
      'fan.b': 'fan.out',
      'fan.a.leaf': 'fan.a',
    })
    for (let i = 0; i < 10; i++) await container.emit('noise', 'x:2')
    const { cascades } = await get(app, '/api/cascades')
    expect(cascades.map((c: { type: string }) => c.type)).toEqual(Array(8).fill('noise'))
  })

  it('shows cascade events dispatched before it existed from the event log, without timing', async () => {
    const container = createContainer({ source: 'late' })
    open.push(container)
    await container.emit('early', 'x:1')
    const [early] = container.eventLog.recent(1)
    const app = createInspector(container)
    const { events } = await get(app, `/api/cascade?origin=${early!.originId}`)
    // With recording off, the list and the events come from the event log.
    const off = createInspector(container, { cascades: 0 })
    const list = await get(off, '/api/cascades')
    expect(list.cascades).toEqual([
      expect.objectContaining({ originId: early!.originId, type: 'early', events: 1, failures: 0 }),
    ])
    expect((await get(off, `/api/cascade?origin=${early!.originId}`)).events).toEqual(events)
    expect(events).toEqual([
      expect.objectContaining({ id: early!.id, parentId: null, durationMs: null, failures: [] }),
    ])
    const dead = await get(app, '/api/dead-letters')
    expect(dead).toEqual({ configured: false, items: [] })
  })

  it('streams events over a real socket in bounded batches, counting the ones skipped', async () => {
    const { container, app } = setup({ streamBatch: 20 })
    const server = await listen(app.fetch)
    open.push(server)
    const res = await fetch(`${server.url}/inspector/api/events?type=load.*&subject=s:*`)
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/)
    const stream = sse(res)
    expect((await stream.next()).event).toBe('ready')
    const total = 3_000
    for (let i = 0; i < total; i++) {
      await container.emit(i % 2 === 0 ? 'load.tick' : 'other.tick', i % 3 === 0 ? 'x:1' : 's:1', {
        i,
      })
    }
    const matching = [...Array(total).keys()].filter((i) => i % 2 === 0 && i % 3 !== 0).length
    let shown = 0
    let skipped = 0
    let last = -1
    while (shown + skipped < matching) {
      const { event, data } = await stream.next()
      expect(event).toBe('batch')
      expect(data.events.length).toBeLessThanOrEqual(20)
      for (const e of data.events) {
        expect(e.type).toBe('load.tick')
        expect(e.subject).toBe('s:1')
        const { i } = JSON.parse(e.payload)
        expect(i).toBeGreaterThan(last) // in order
        last = i
      }
      shown += data.events.length
      skipped += data.skipped
    }
    expect(shown + skipped).toBe(matching)
    expect(shown).toBeGreaterThan(0)
    stream.cancel()
  })

  it("streams a subject's state over a real socket, fresh after each of its events", async () => {
    const { container, app } = setup()
    await container.receive(reading('s1', 'device:<b>', 10))
    const server = await listen(app.fetch)
    open.push(server)
    const res = await fetch(
      `${server.url}/inspector/api/subject/stream?name=${encodeURIComponent('device:<b>')}`,
    )
    const stream = sse(res)
    expect((await stream.next()).event).toBe('ready')
    const first = await stream.next()
    expect(first.event).toBe('state')
    expect(first.data).toMatchObject({
      name: 'device:<b>',
      props: { cpu: 10 },
      ext: { model: 'x1' },
    })
    await container.receive(reading('s2', 'device:other', 70))
    await container.receive(reading('s3', 'device:<b>', 50))
    let next = await stream.next()
    while (next.data.props.cpu !== 50) next = await stream.next()
    expect(next.data.events.map((e: { subject: string }) => e.subject)).toEqual(
      expect.arrayContaining(['device:<b>']),
    )
    expect(next.data.events.every((e: { subject: string }) => e.subject === 'device:<b>')).toBe(
      true,
    )
    stream.cancel()
  })

  it("lists the container's own dead-letter sink when it can list, newest first, filtered", async () => {
    for (const sink of [createMemoryDeadLetters(), storageDeadLetters(createMemoryStorage())]) {
      const container = createContainer({ source: 'dl', deadLetter: sink })
      open.push(container)
      container.onError(() => {})
      container.on('order.*', { name: 'billing' }, (ctx) => {
        throw new Error(`no ${ctx.subject.name}`)
      })
      container.on('order.paid', { name: 'ledger' }, () => {
        throw new Error('ledger down')
      })
      const event = (id: string, type: string, subject: string) => ({
        id,
        source: 'shop',
        type,
        subject,
      })
      await container.receive(event('1', 'order.created', 'order:1'))
      await container.receive(event('2', 'order.paid', 'order:2'))
      const app = createInspector(container)
      const all = await get(app, '/api/dead-letters')
      expect(all.configured).toBe(true)
      expect(all.truncated).toBe(false)
      expect(all.items.map((d: Json) => d.id).sort()).toEqual([
        'billing|shop|1',
        'billing|shop|2',
        'ledger|shop|2',
      ])
      expect(all.items[2]).toMatchObject({
        id: 'billing|shop|1',
        attempts: 1,
        error: expect.stringContaining('no order:1'),
      })
      expect(all.items[2].event).toMatchObject({ type: 'order.created', subject: 'order:1' })
      const ids = async (query: string) =>
        (await get(app, `/api/dead-letters?${query}`)).items.map((d: Json) => d.id).sort()
      expect(await ids('handler=ledger')).toEqual(['ledger|shop|2'])
      expect(await ids('type=order.paid')).toEqual(['billing|shop|2', 'ledger|shop|2'])
      expect(await ids('subject=order:1&handler=billing')).toEqual(['billing|shop|1'])
      expect(await ids('subject=order:9')).toEqual([])
    }
    // A sink that cannot list, and no option: nothing to show.
    const blind = createContainer({ deadLetter: { durable: false, put: async () => {} } })
    open.push(blind)
    expect(await get(createInspector(blind), '/api/dead-letters')).toEqual({
      configured: false,
      items: [],
    })
  })

  it('filters what the deadLetters option returns, which wins over the sink', async () => {
    const container = createContainer({ deadLetter: createMemoryDeadLetters() })
    open.push(container)
    const entry = (handler: string, at: number): DeadLetter => ({
      handler,
      at,
      attempts: 2,
      error: new Error('x'),
      event: {
        id: `e${at}`,
        type: 't',
        source: 's',
        subject: 'x:1',
        time: at,
        originId: `e${at}`,
        payload: undefined,
        extra: undefined,
      },
    })
    const app = createInspector(container, { deadLetters: () => [entry('a', 1), entry('b', 2)] })
    const all = await get(app, '/api/dead-letters')
    expect(all.items.map((d: Json) => [d.handler, d.at, d.id])).toEqual([
      ['b', 2, undefined],
      ['a', 1, undefined],
    ])
    expect((await get(app, '/api/dead-letters?handler=a')).items).toHaveLength(1)
  })

  it('rejects invalid options with a TypeError', () => {
    const container = createContainer()
    open.push(container)
    expect(() => createInspector(container, { streamBatch: 0 })).toThrow(TypeError)
    expect(() => createInspector(container, { cascades: -1 })).toThrow(TypeError)
    expect(() => createInspector(container, { cascades: 1.5 })).toThrow(TypeError)
  })
})
