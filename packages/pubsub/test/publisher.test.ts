import { createContainer, isSubstateError } from '@substate/core'
import { pubsubPublisher, pubsubTopics } from '@substate/pubsub'
import { createEmulatorClient } from '@substate/test-support/pubsub-client'
import {
  createEmulatorTopic,
  type EmulatorTopic,
  type ReceivedEmulatorMessage,
} from '@substate/test-support/pubsub-emulator'
import { describeWith } from '@substate/test-support/services'
import { afterEach, expect, it } from 'vitest'

const cleanup: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn()
})

async function setup(ordering = true) {
  const fixture = await createEmulatorTopic({ prefix: 'pub', ordering })
  const client = createEmulatorClient()
  cleanup.push(
    () => fixture.delete(),
    () => client.close(),
  )
  return { fixture, client }
}

/** Pulls until `n` messages arrived (acking them) or the time is up. */
async function pullAll(fixture: EmulatorTopic, n: number, ms = 10_000) {
  const out: ReceivedEmulatorMessage[] = []
  const end = Date.now() + ms
  while (out.length < n && Date.now() < end) {
    const got = await fixture.pull({ max: 1000 })
    out.push(...got)
    if (got.length === 0) await new Promise((r) => setTimeout(r, 50))
  }
  return out
}

describeWith('pubsub', 'pubsubPublisher (emulator)', () => {
  it('publishes routed events with ce- attributes, JSON data and the subject as ordering key', async () => {
    const { fixture, client } = await setup()
    const container = createContainer({ source: 'pub-test' })
    cleanup.push(() => container.close())
    container.route('order.*', pubsubPublisher({ client, topic: fixture.topic }), {
      policy: 'direct',
    })
    const order = container.subject('order:1')
    await order.setExt('tenant', 'acme')
    const result = await container.emit('order.created', order, { total: 12.5 })
    expect(result.ok).toBe(true)
    const [m] = await pullAll(fixture, 1)
    expect(m!.orderingKey).toBe('order:1')
    expect(JSON.parse(m!.data)).toEqual({ total: 12.5 })
    expect(m!.attributes).toMatchObject({
      'ce-specversion': '1.0',
      'ce-id': result.event.id,
      'ce-source': 'pub-test',
      'ce-type': 'order.created',
      'ce-subject': 'order:1',
      'ce-originid': result.event.originId,
      'ce-tenant': 'acme',
      'Content-Type': 'application/json',
    })
  })

  it('route interceptors add extension attributes and message attributes', async () => {
    const { fixture, client } = await setup()
    const container = createContainer({ source: 'pub-test' })
    cleanup.push(() => container.close())
    container.route('order.*', pubsubPublisher({ client, topic: fixture.topic }), {
      policy: 'direct',
      intercept: (envelope, next) => {
        envelope.extensions.region = 'eu'
        envelope.headers.team = 'billing'
        return next()
      },
    })
    expect((await container.emit('order.created', 'order:2')).ok).toBe(true)
    const [m] = await pullAll(fixture, 1)
    expect(m!.attributes).toMatchObject({
      'ce-region': 'eu',
      team: 'billing',
      'ce-type': 'order.created',
    })
  })

  it('accepts a full topic path and a function of the event', async () => {
    const { fixture, client } = await setup(false)
    const container = createContainer()
    cleanup.push(() => container.close())
    container.route(
      'a.*',
      pubsubPublisher({ client, topic: fixture.topicPath, orderingKey: false }),
    )
    container.route(
      'b.*',
      pubsubPublisher({ client, topic: (e) => (e.type === 'b.x' ? fixture.topic : 'nope') }),
    )
    expect((await container.emit('a.x', 's:1')).ok).toBe(true)
    expect((await container.emit('b.x', 's:1')).ok).toBe(true)
    const got = await pullAll(fixture, 2)
    expect(got.map((m) => m.attributes!['ce-type']).sort()).toEqual(['a.x', 'b.x'])
    expect(got.find((m) => m.attributes!['ce-type'] === 'a.x')!.orderingKey ?? '').toBe('')
  })

  it('batches concurrent sends (not one request at a time) and keeps per-key order', async () => {
    const { fixture, client } = await setup()
    const container = createContainer()
    cleanup.push(() => container.close())
    container.route('tick', pubsubPublisher({ client, topic: fixture.topic }), { policy: 'direct' })
    const n = 1000
    const t0 = performance.now()
    const results = await Promise.all(
      Array.from({ length: n }, (_, i) => container.emit('tick', `s:${i % 10}`, { i })),
    )
    const ms = performance.now() - t0
    expect(results.every((r) => r.ok)).toBe(true)
    // One awaited publish at a time would take >= n * 10 ms (the batching delay).
    expect(ms).toBeLessThan(n * 5)
    const got = await pullAll(fixture, n)
    expect(got).toHaveLength(n)
    const seen = new Map<string, number>()
    for (const m of got) {
      const { i } = JSON.parse(m.data) as { i: number }
      expect(i).toBeGreaterThan(seen.get(m.orderingKey!) ?? -1)
      seen.set(m.orderingKey!, i)
    }
  })

  it('a failed publish is a failure the emitter sees, and the paused ordering key is resumed', async () => {
    const { fixture, client } = await setup()
    const container = createContainer()
    cleanup.push(() => container.close())
    const failures: string[] = []
    container.onError((f) => failures.push(f.handler))
    const missing = `${fixture.topic}-missing`
    container.route('x', pubsubPublisher({ client, topic: missing, name: 'out' }), {
      policy: 'direct',
    })
    const failed = await container.emit('x', 's:1', { n: 1 })
    expect(failed.ok).toBe(false)
    expect(failed.failures[0]!.handler).toBe('route:out')
    expect(failed.failures[0]!.error.message).toMatch(/publish of x for s:1 .* failed/)
    expect(isSubstateError(failed.failures[0]!.error.cause, 'DELIVERY')).toBe(true)
    expect(failures).toEqual(['route:out'])

    // The same Topic object and key: without resumePublishing every later publish is rejected.
    await fixture.delete()
    const [created] = await client.createTopic(missing)
    cleanup.push(() => created.delete())
    const sub = `${fixture.subscription}-2`
    const [subscription] = await created.createSubscription(sub, { enableMessageOrdering: true })
    cleanup.push(() => subscription.delete())
    const ok = await container.emit('x', 's:1', { n: 2 })
    expect(ok.failures.map((f) => f.error.message)).toEqual([])
  })

  it('flush() waits for outstanding publishes', async () => {
    const { fixture, client } = await setup()
    const publisher = pubsubPublisher({
      client,
      topic: fixture.topic,
      batching: { maxMessages: 1000, maxMilliseconds: 500 },
    })
    const container = createContainer()
    container.route('x', publisher, { policy: 'direct' })
    const sends = Array.from({ length: 5 }, (_, i) => container.emit('x', 's:1', { i }))
    await new Promise((r) => setTimeout(r, 20))
    const t0 = performance.now()
    await publisher.flush()
    expect(performance.now() - t0).toBeLessThan(400) // flushed now, not after the batching delay
    expect((await Promise.all(sends)).every((r) => r.ok)).toBe(true)
    await container.close()
    expect(await pullAll(fixture, 5)).toHaveLength(5)
  })

  it('pubsubTopics makes emit(..., { topic }) publish, one publisher per topic', async () => {
    const { fixture, client } = await setup()
    const topics = pubsubTopics({ client })
    expect(topics(fixture.topic)).toBe(topics(fixture.topic))
    const container = createContainer({ targets: { topic: topics } })
    cleanup.push(() => container.close())
    let local = 0
    container.on('user.created', () => {
      local++
    })
    const r = await container.emit(
      'user.created',
      'user:1',
      { name: 'Ada' },
      { topic: fixture.topic },
    )
    expect(r.ok).toBe(true)
    expect(local).toBe(0)
    const [m] = await pullAll(fixture, 1)
    expect(m!.attributes!['ce-type']).toBe('user.created')
  })
})
