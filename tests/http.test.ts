/**
 * CloudEvents over HTTP between two containers: A routes events with `httpEmitter` to B's
 * `createReceiver` on a real socket (127.0.0.1).
 */
import { httpEmitter } from '@substate/cloudevents'
import {
  type Container,
  createContainer,
  createMemoryStorage,
  type EventContext,
  type SubjectStorage,
} from '@substate/core'
import { createReceiver } from '@substate/hono'
import { listen } from '@substate/test-support/http'
import { Hono } from 'hono'
import { afterEach, describe, expect, it } from 'vitest'

const cleanups: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

async function service(
  source: string,
): Promise<{ container: Container; storage: SubjectStorage; url: string }> {
  const storage = createMemoryStorage()
  const container = createContainer({ source, storage })
  container.onError(() => {})
  const server = await listen(createReceiver(container, { onError: () => {} }).fetch)
  cleanups.push(
    () => server.close(),
    () => container.close(),
  )
  return { container, storage, url: `${server.url}/` }
}

describe.each(['binary', 'structured'] as const)('A → B in %s mode', (mode) => {
  it('carries ext properties and originid both ways', async () => {
    const a = await service('svc-a')
    const b = await service('svc-b')
    a.container.route('alerts.*', httpEmitter({ url: b.url, mode }), { policy: 'direct' })
    b.container.route('acks.*', httpEmitter({ url: a.url, mode }), { policy: 'direct' })

    const seenByB: EventContext[] = []
    b.container.on('alerts.*', async (ctx) => {
      seenByB.push(ctx)
      await ctx.subject.setExt('Handled_By', 'svc-b')
      await ctx.subject.set('level', (ctx.payload as { level: number }).level)
      await ctx.emit('acks.alert', { ok: true })
    })
    const seenByA: EventContext[] = []
    let localA = 0
    a.container.on('alerts.*', () => {
      localA++
    })
    a.container.on('acks.*', (ctx) => {
      seenByA.push(ctx)
    })

    const device = a.container.subject('device:1')
    await device.setExt('region', 'eu-west')
    await device.setExt('Tenant_ID', 'acme')
    const result = await a.container.emit('alerts.high', device, { level: 3 })

    expect(result.ok).toBe(true)
    expect(localA).toBe(0) // direct: remote only
    expect(seenByB).toHaveLength(1)
    const inB = seenByB[0]!
    expect(inB.originId).toBe(result.event.originId)
    expect(inB.id).toBe(result.event.id)
    expect(inB.event.source).toBe('svc-a')
    expect(inB.event.extensions).toEqual({ region: 'eu-west', tenantid: 'acme' })
    expect(inB.payload).toEqual({ level: 3 })
    // stored in B before B answered A
    expect((await b.storage.load('device:1')).props).toEqual({ level: 3 })

    // B's ack leaves B once B's unit committed (from its outbox), after B answered A.
    await expect.poll(() => seenByA.length).toBe(1)
    const back = seenByA[0]!
    expect(back.originId).toBe(result.event.originId)
    expect(back.event.source).toBe('svc-b')
    expect(back.event.extensions).toEqual({ handledby: 'svc-b' })
  })
})

it('emit(..., { dispatchUrl }) sends to the URL only', async () => {
  const b = await service('svc-b')
  const got: string[] = []
  b.container.on('device.reboot', (ctx) => {
    got.push(ctx.subject.name)
  })
  const a = createContainer({
    source: 'svc-a',
    targets: { dispatchUrl: (url) => httpEmitter({ url }) },
  })
  cleanups.push(() => a.close())
  const result = await a.emit('device.reboot', 'device:9', {}, { dispatchUrl: b.url })
  expect(result.ok).toBe(true)
  expect(got).toEqual(['device:9'])
})

it.each(['binary', 'structured'] as const)(
  'route interceptors add extension attributes and headers to what goes out (%s)',
  async (mode) => {
    // B behind a middleware that records the headers it was sent.
    const container = createContainer({ source: 'svc-b' })
    container.onError(() => {})
    const seen: Array<{ tenant: unknown; token: string | undefined }> = []
    const app = new Hono()
    let token: string | undefined
    app.use('*', async (c, next) => {
      token = c.req.header('x-api-token')
      await next()
    })
    app.route('/', createReceiver(container))
    container.on('order.placed', (ctx) => {
      seen.push({ tenant: ctx.event.extensions?.tenant, token })
    })
    const server = await listen(app.fetch)
    cleanups.push(
      () => server.close(),
      () => container.close(),
    )
    const a = createContainer({ source: 'svc-a' })
    a.onError(() => {})
    cleanups.push(() => a.close())
    const order: string[] = []
    a.route('order.*', httpEmitter({ url: `${server.url}/`, mode }), {
      policy: 'direct',
      intercept: [
        async (envelope, next) => {
          order.push('outer in')
          envelope.extensions.tenant = 'acme'
          envelope.headers['x-api-token'] = 'secret-1'
          await next()
          order.push('outer out')
        },
        async (envelope, next) => {
          order.push('inner')
          if (envelope.event.subject === 'order:skip') return // not delivered
          await next()
        },
      ],
    })
    expect((await a.emit('order.placed', 'order:1')).ok).toBe(true)
    expect(seen).toEqual([{ tenant: 'acme', token: 'secret-1' }])
    expect(order).toEqual(['outer in', 'inner', 'outer out'])
    expect((await a.emit('order.placed', 'order:skip')).ok).toBe(true)
    expect(seen).toHaveLength(1)
  },
)

it('a handler that fails once is retried by the sender and handled once', async () => {
  const b = await service('svc-b')
  let attempts = 0
  b.container.on('counter.bump', async (ctx) => {
    attempts++
    await ctx.subject.set('count', (n = 0) => n + 1)
    if (attempts === 1) throw new Error('transient')
  })
  const a = await service('svc-a')
  a.container.route('counter.*', httpEmitter({ url: b.url, backoff: { initial: 5 } }), {
    policy: 'direct',
  })
  const result = await a.container.emit('counter.bump', 'counter:1', {})
  expect(result.ok).toBe(true)
  expect(attempts).toBe(2)
  // the failed attempt's increment was discarded: handled (and stored) once
  expect((await b.storage.load('counter:1')).props).toEqual({ count: 1 })
})

it('a handler that keeps failing is a failure the sender sees (500, not 2xx)', async () => {
  const b = await service('svc-b')
  b.container.on('counter.bump', () => {
    throw new Error('broken')
  })
  const a = await service('svc-a')
  a.container.route('counter.*', httpEmitter({ url: b.url, retries: 1, backoff: { initial: 5 } }), {
    policy: 'direct',
  })
  const result = await a.container.emit('counter.bump', 'counter:1', {})
  expect(result.ok).toBe(false)
  // The receiver's 500 names no internal error text: a short message and the id of its log line.
  expect(result.failures[0]!.error.message).toMatch(/answered 500 .*handler failed.*errorId/)
  expect(result.failures[0]!.error.message).not.toMatch(/broken/)
})
