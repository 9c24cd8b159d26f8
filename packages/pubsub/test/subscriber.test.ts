import type { PubSub } from '@google-cloud/pubsub'
import { type Container, createContainer, createMemoryStorage } from '@substate/core'
import { type PubsubSubscriberOptions, pubsubSubscriber } from '@substate/pubsub'
import { createEmulatorClient } from '@substate/test-support/pubsub-client'
import {
  createEmulatorTopic,
  type EmulatorMessage,
  type EmulatorTopic,
} from '@substate/test-support/pubsub-emulator'
import { describeWith } from '@substate/test-support/services'
import { afterEach, expect, it } from 'vitest'

const cleanup: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn()
})

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting')
    await new Promise((r) => setTimeout(r, 20))
  }
}

interface Setup {
  fixture: EmulatorTopic
  client: PubSub
  container: Container
  storage: ReturnType<typeof createMemoryStorage>
}

async function setup(ordering = true): Promise<Setup> {
  const fixture = await createEmulatorTopic({ prefix: 'sub', ordering })
  const client = createEmulatorClient()
  const storage = createMemoryStorage()
  const container = createContainer({ storage, source: 'sub-test' })
  container.onError(() => {}) // failures are asserted on; keep the output quiet
  cleanup.push(
    () => fixture.delete(),
    () => client.close(),
    () => container.close(),
  )
  return { fixture, client, container, storage }
}

const subscribe = (s: Setup, options: Partial<PubsubSubscriberOptions> = {}) =>
  pubsubSubscriber(s.container, {
    client: s.client,
    subscriptions: s.fixture.subscription,
    onError: () => {},
    ...options,
  })

const ce = (
  id: string,
  type: string,
  subject: string,
  data: unknown,
  key?: string,
): EmulatorMessage => ({
  data: JSON.stringify(data),
  attributes: {
    'ce-specversion': '1.0',
    'ce-id': id,
    'ce-source': 'producer',
    'ce-type': type,
    'ce-subject': subject,
    'ce-originid': `origin-${id}`,
    'Content-Type': 'application/json',
  },
  ...(key === undefined ? {} : { orderingKey: key }),
})

describeWith('pubsub', 'pubsubSubscriber (emulator)', () => {
  it('handles a message in a unit of work, stores its subjects, then acks', async () => {
    const s = await setup()
    const seen: unknown[] = []
    s.container.on('order.created', async (ctx) => {
      seen.push({ payload: ctx.payload, originId: ctx.originId, source: ctx.event.source })
      await ctx.subject.set('total', (ctx.payload as { total: number }).total)
    })
    const sub = subscribe(s)
    await s.fixture.publish(ce('1', 'order.created', 'order:1', { total: 5 }))
    await until(() => sub.stats().acked === 1)
    expect(seen).toEqual([{ payload: { total: 5 }, originId: 'origin-1', source: 'producer' }])
    expect((await s.storage.load('order:1')).props).toEqual({ total: 5 })
    await sub.close()
    expect(await s.fixture.pull()).toEqual([]) // acked: nothing to redeliver
    expect(sub.stats()).toMatchObject({ received: 1, acked: 1, nacked: 0, inflight: 0 })
  })

  it('understands a Python KRules publisher (unprefixed attributes)', async () => {
    const s = await setup()
    const seen: unknown[] = []
    s.container.on('device.reading', (ctx) => {
      seen.push([ctx.subject.name, ctx.payload, ctx.originId, ctx.event.extensions])
    })
    const sub = subscribe(s)
    await s.fixture.publish({
      data: JSON.stringify({ temp: 21 }),
      attributes: {
        id: 'k-1',
        type: 'device.reading',
        source: 'krules-svc',
        subject: 'device:7',
        time: '2025-01-02T03:04:05.678901+00:00',
        datacontenttype: 'application/json',
        originid: 'krules-origin',
        'ce-type': 'device.reading',
        contentType: 'text/json',
        site: 'milan',
      },
    })
    await until(() => sub.stats().acked === 1)
    expect(seen).toEqual([['device:7', { temp: 21 }, 'krules-origin', { site: 'milan' }]])
  })

  it('nacks when a handler fails; the redelivery is handled successfully exactly once', async () => {
    const s = await setup()
    let attempts = 0
    s.container.on('pay', async (ctx) => {
      attempts++
      await ctx.subject.set('count', (n: number | undefined) => (n ?? 0) + 1)
      if (attempts === 1) throw new Error('flaky downstream')
    })
    const sub = subscribe(s)
    await s.fixture.publish(ce('p-1', 'pay', 'acct:1', {}))
    await until(() => sub.stats().acked === 1)
    expect(attempts).toBe(2)
    expect(sub.stats()).toMatchObject({ received: 2, acked: 1, nacked: 1 })
    // The failed attempt stored nothing; the successful one once.
    expect((await s.storage.load('acct:1')).props).toEqual({ count: 1 })
    await new Promise((r) => setTimeout(r, 300))
    expect(attempts).toBe(2)
  })

  it('an onError hook that throws does not leave the message un-acked, nor crash', async () => {
    const s = await setup()
    const sub = subscribe(s, {
      onError: () => {
        throw new Error('a broken hook')
      },
      onInvalid: () => 'ack',
    })
    // not an event: onError is called (and throws), then onInvalid decides
    await s.fixture.publish({
      data: '{}',
      attributes: { 'ce-specversion': '1.0', 'ce-id': 'h-1', 'ce-type': 'x' },
    })
    await until(() => sub.stats().acked === 1)
    expect(sub.stats()).toMatchObject({ invalid: 1, acked: 1 })
  })

  it('does not handle the same CloudEvent twice (acks the duplicate)', async () => {
    const s = await setup()
    let handled = 0
    s.container.on('x', () => {
      handled++
    })
    const sub = subscribe(s)
    await s.fixture.publish(ce('dup', 'x', 's:1', {}))
    await s.fixture.publish(ce('dup', 'x', 's:1', {}))
    await until(() => sub.stats().acked === 2)
    expect(handled).toBe(1)
  })

  it('nacks a message that is not an event, or acks it when onInvalid says so', async () => {
    const s = await setup()
    const errors: string[] = []
    const sub = subscribe(s, {
      onError: (e) => errors.push(e.message),
      onInvalid: (m) => (m.attributes.drop === 'yes' ? 'ack' : 'nack'),
    })
    await s.fixture.publish({
      data: '{}',
      attributes: { 'ce-specversion': '1.0', 'ce-id': '1', 'ce-type': 'x', drop: 'yes' },
    })
    await until(() => sub.stats().acked === 1)
    expect(errors[0]).toMatch(/not an event, invalid ce-source: .*required/)
    await s.fixture.publish({
      data: '{',
      attributes: { type: 'x', subject: 's', contentType: 'text/json' },
    })
    await until(() => sub.stats().nacked >= 2) // nacked, redelivered, nacked again
    expect(sub.stats().invalid).toBeGreaterThanOrEqual(3)
  })

  it('close() waits for messages in flight, which are acked', async () => {
    const s = await setup()
    let done = 0
    s.container.on('slow', async (ctx) => {
      await new Promise((r) => setTimeout(r, 400))
      await ctx.subject.set('done', true)
      done++
    })
    const sub = subscribe(s)
    await s.fixture.publish(ce('s-1', 'slow', 'job:1', {}), ce('s-2', 'slow', 'job:2', {}))
    await until(() => sub.stats().inflight === 2)
    const report = await s.container.close()
    expect(done).toBe(2)
    expect(report.errors).toEqual([])
    expect(sub.stats()).toMatchObject({ acked: 2, nacked: 0, inflight: 0 })
    expect(await s.fixture.pull()).toEqual([])
  })

  it('keeps the order of an ordering key across a failure: later messages wait for the redelivery', async () => {
    const s = await setup(true)
    const order: number[] = []
    let failedOnce = false
    s.container.on('step', async (ctx) => {
      const { n } = ctx.payload as { n: number }
      if (n === 1 && !failedOnce) {
        failedOnce = true
        throw new Error('first delivery of step 1 fails')
      }
      order.push(n)
      await ctx.subject.set('last', n)
    })
    const sub = subscribe(s)
    await s.fixture.publish(
      ...[0, 1, 2, 3, 4].map((n) => ce(`o-${n}`, 'step', 'flow:1', { n }, 'flow:1')),
    )
    await until(() => order.length >= 5)
    await new Promise((r) => setTimeout(r, 200))
    expect(order).toEqual([0, 1, 2, 3, 4])
    expect((await s.storage.load('flow:1')).props).toEqual({ last: 4 })
    expect(sub.stats().nacked).toBeGreaterThanOrEqual(1)
  })
})
