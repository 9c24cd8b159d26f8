/**
 * Pub/Sub across containers, on the emulator and a real Redis storage: what one container routes
 * to a topic reaches the handlers of another, in order per subject, exactly once.
 */
import type { PubSub } from '@google-cloud/pubsub'
import { type Container, createContainer, type SubjectStorage } from '@substate/core'
import { pubsubPublisher, pubsubSubscriber } from '@substate/pubsub'
import { createRedisStorage } from '@substate/storage-redis'
import { createEmulatorClient } from '@substate/test-support/pubsub-client'
import { createEmulatorTopic, type EmulatorTopic } from '@substate/test-support/pubsub-emulator'
import { describeWith, redisUrl, services } from '@substate/test-support/services'
import { Redis } from 'ioredis'
import { afterEach, expect, it } from 'vitest'

const cleanup: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn().catch(() => {})
})

async function until(cond: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out waiting')
    await new Promise((r) => setTimeout(r, 25))
  }
}

interface Pair {
  fixture: EmulatorTopic
  client: PubSub
  /** Publishes: routes `**` to the topic (direct). */
  front: Container
  /** Subscribes, on Redis storage. */
  worker: Container
  storage: SubjectStorage
}

async function pair(): Promise<Pair> {
  const fixture = await createEmulatorTopic({ prefix: 'e2e', ordering: true })
  const client = createEmulatorClient()
  const redis = new Redis(redisUrl!)
  const prefix = `pubsub-e2e-${process.pid}-${Math.random().toString(36).slice(2, 8)}:`
  const storage = createRedisStorage({ client: redis, prefix })
  const front = createContainer({ source: 'front' })
  const worker = createContainer({ source: 'worker', storage })
  worker.onError(() => {})
  front.route('**', pubsubPublisher({ client, topic: fixture.topic }), { policy: 'direct' })
  cleanup.push(
    () => fixture.delete(),
    () => client.close(),
    async () => {
      const keys = await redis.keys(`s:${prefix}*`)
      if (keys.length > 0) await redis.del(...keys)
      redis.disconnect()
    },
    () => front.close(),
    () => worker.close(),
  )
  return { fixture, client, front, worker, storage }
}

// Needs both: skips (or fails under CI) naming the first one missing.
const needs = services.pubsub === null ? 'pubsub' : 'redis'

describeWith(needs, 'pubsub across containers (emulator, Redis)', () => {
  it('round trip: type, subject, payload, ext properties and originid arrive', async () => {
    const p = await pair()
    const seen: Record<string, unknown>[] = []
    p.worker.on('**', async (ctx) => {
      if (ctx.event.source !== 'front') return // not the worker's own property events
      seen.push({
        type: ctx.type,
        subject: ctx.subject.name,
        payload: ctx.payload,
        originId: ctx.originId,
        propertyName: ctx.propertyName,
        extensions: ctx.event.extensions,
        source: ctx.event.source,
      })
      if (ctx.type === 'order.created') await ctx.subject.set('seen', true)
    })
    const sub = pubsubSubscriber(p.worker, {
      client: p.client,
      subscriptions: p.fixture.subscription,
    })

    const order = p.front.subject('order:1')
    await order.setExt('tenant', 'acme')
    await order.setExt('Priority', 2)
    const r = await p.front.emit('order.created', order, { total: 12.5, items: ['a', 'b'] })
    const origin = r.event.originId
    expect(r.ok).toBe(true)
    await order.set('status', 'paid') // a property event, routed too

    await until(() => sub.stats().acked >= 2)
    expect(seen).toEqual([
      {
        type: 'order.created',
        subject: 'order:1',
        payload: { total: 12.5, items: ['a', 'b'] },
        originId: origin,
        propertyName: undefined,
        extensions: { tenant: 'acme', priority: '2' },
        source: 'front',
      },
      {
        type: 'subject-property-changed',
        subject: 'order:1',
        payload: { property_name: 'status', old_value: null, value: 'paid' },
        originId: expect.any(String),
        propertyName: 'status',
        extensions: { tenant: 'acme', priority: '2' },
        source: 'front',
      },
    ])
    expect((await p.storage.load('order:1')).props).toEqual({ seen: true })
  })

  it('originid is inherited through the hop: nested emits on the worker keep it', async () => {
    const p = await pair()
    const origins: string[] = []
    p.worker.events$.subscribe((e) => origins.push(`${e.type}:${e.originId}`))
    p.worker.on('ping', async (ctx) => {
      await ctx.emit('pong')
      await ctx.subject.set('n', 1)
    })
    const sub = pubsubSubscriber(p.worker, {
      client: p.client,
      subscriptions: p.fixture.subscription,
    })
    const r = await p.front.emit('ping', 'x:1')
    await until(() => sub.stats().acked === 1)
    const o = r.event.originId
    expect(origins).toEqual([`ping:${o}`, `pong:${o}`, `subject-property-changed:${o}`])
  })

  it('a handler failing on the first delivery: not acked, redelivered, handled successfully once', async () => {
    const p = await pair()
    let attempts = 0
    p.worker.on('charge', async (ctx) => {
      attempts++
      await ctx.subject.set('charged', (n = 0) => n + 1)
      if (attempts === 1) throw new Error('payment gateway timeout')
    })
    const sub = pubsubSubscriber(p.worker, {
      client: p.client,
      subscriptions: p.fixture.subscription,
    })
    expect((await p.front.emit('charge', 'acct:1', { amount: 5 })).ok).toBe(true)
    await until(() => sub.stats().acked === 1)
    await new Promise((r) => setTimeout(r, 500)) // nothing more arrives
    expect(attempts).toBe(2)
    expect(sub.stats()).toMatchObject({ received: 2, acked: 1, nacked: 1 })
    expect((await p.storage.load('acct:1')).props).toEqual({ charged: 1 })
  })

  it('ordering: 1,000 events over 20 subjects are handled in publish order per subject', async () => {
    const p = await pair()
    const n = 1000
    const subjects = 20
    const last = new Map<string, number>()
    const violations: string[] = []
    let handled = 0
    p.worker.on('seq', async (ctx) => {
      const { i } = ctx.payload as { i: number }
      const prev = last.get(ctx.subject.name) ?? -1
      if (i !== prev + 1) violations.push(`${ctx.subject.name}: ${prev} then ${i}`)
      last.set(ctx.subject.name, i)
      await ctx.subject.set('i', i)
      handled++
    })
    const sub = pubsubSubscriber(p.worker, {
      client: p.client,
      subscriptions: p.fixture.subscription,
    })
    const results = await Promise.all(
      Array.from({ length: n }, (_, k) =>
        p.front.emit('seq', `seq:${k % subjects}`, { i: Math.floor(k / subjects) }),
      ),
    )
    expect(results.every((r) => r.ok)).toBe(true)
    await until(() => sub.stats().acked >= n, 60_000)
    expect(violations).toEqual([])
    expect(handled).toBe(n)
    for (let s = 0; s < subjects; s++)
      expect((await p.storage.load(`seq:${s}`)).props).toEqual({ i: n / subjects - 1 })
  }, 90_000)
})
