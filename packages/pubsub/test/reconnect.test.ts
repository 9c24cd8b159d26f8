import { createContainer, createMemoryStorage, isSubstateError } from '@substate/core'
import { pubsubPublisher, pubsubSubscriber } from '@substate/pubsub'
import { createEmulatorClient } from '@substate/test-support/pubsub-client'
import { createEmulatorTopic } from '@substate/test-support/pubsub-emulator'
import { describeWith, pubsubEmulatorHost } from '@substate/test-support/services'
import { afterEach, expect, it } from 'vitest'

const cleanup: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn().catch(() => {})
})

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** A raw call to the emulator's REST API (not through the library under test). */
async function emulator(method: string, path: string, body?: unknown): Promise<void> {
  const res = await fetch(`http://${pubsubEmulatorHost}/v1/${path}`, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`)
}

const ce = (id: string) => ({
  data: '{}',
  attributes: {
    'ce-specversion': '1.0',
    'ce-id': id,
    'ce-source': 'producer',
    'ce-type': 'ping',
    'ce-subject': 'thing:1',
  },
})

describeWith('pubsub', 'pubsubSubscriber reconnects (emulator)', () => {
  it('resumes after its subscription is deleted and recreated, reporting the outage meanwhile', async () => {
    const fixture = await createEmulatorTopic({ prefix: 'reconnect' })
    const client = createEmulatorClient()
    const container = createContainer({ storage: createMemoryStorage(), source: 'reconnect' })
    cleanup.push(
      () => fixture.delete(),
      () => client.close(),
      () => container.close(),
    )
    const seen: string[] = []
    container.on('ping', (ctx) => {
      seen.push(ctx.id)
    })
    const errors: Error[] = []
    // A pino-style logger: the subscriber's state changes go through it.
    const logged: Array<{ level: string; obj: Record<string, unknown>; msg?: string }> = []
    const at = (level: string) => (obj: Record<string, unknown>, msg?: string) =>
      void logged.push({ level, obj, ...(msg === undefined ? {} : { msg }) })
    const subscriber = pubsubSubscriber(container, {
      client,
      subscriptions: fixture.subscription,
      onError: (e) => errors.push(e),
      reconnect: { min: 50, max: 500 },
      logger: { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug') },
    })
    await until(() => subscriber.ready(), 10_000, 'the subscriber to consume')
    expect(subscriber.state()).toEqual({ status: 'consuming', failing: [], reconnects: 0 })
    await fixture.publish(ce('before'))
    await until(() => seen.includes('before'), 10_000, 'the first message')

    await emulator('DELETE', fixture.subscriptionPath)
    await until(() => subscriber.state().status === 'reconnecting', 10_000, 'reconnecting')
    expect(subscriber.ready()).toBe(false)
    const state = subscriber.state()
    expect(state.failing).toEqual([fixture.subscriptionPath])
    expect(state.lastError?.message).toMatch(/not (exist|found)/i)
    // The stream's close can turn the state before its error event reaches onError: wait for it.
    await until(() => errors.length > 0, 10_000, 'the outage reported to onError')
    expect(errors.length).toBeGreaterThan(0)

    await emulator('PUT', fixture.subscriptionPath, { topic: fixture.topicPath })
    await fixture.publish(ce('after'))
    await until(() => seen.includes('after'), 15_000, 'a message after the subscription came back')
    await until(() => subscriber.ready(), 5_000, 'consuming again')
    expect(subscriber.state().reconnects).toBeGreaterThanOrEqual(1)
    const stopped = logged.find((l) => l.level === 'warn')
    expect(stopped?.obj.subscription).toBe(fixture.subscriptionPath)
    expect(stopped?.obj.err).toBeInstanceOf(Error)
    expect(logged.some((l) => l.level === 'info' && /consuming again/.test(l.msg ?? ''))).toBe(true)
    // With an onError hook, errors go to the hook, not the logger.
    expect(logged.some((l) => l.level === 'error')).toBe(false)
    expect(subscriber.stats().reconnects).toBe(subscriber.state().reconnects)
    await subscriber.close()
    expect(subscriber.state().status).toBe('closed')
    expect(subscriber.ready()).toBe(false)
  })

  it('starts on a subscription that does not exist yet and consumes once it does', async () => {
    const fixture = await createEmulatorTopic({ prefix: 'reconnect' })
    const client = createEmulatorClient()
    const container = createContainer({ storage: createMemoryStorage(), source: 'reconnect' })
    cleanup.push(
      () => fixture.delete(),
      () => client.close(),
      () => container.close(),
    )
    await emulator('DELETE', fixture.subscriptionPath)
    const seen: string[] = []
    container.on('ping', (ctx) => {
      seen.push(ctx.id)
    })
    const subscriber = pubsubSubscriber(container, {
      client,
      subscriptions: fixture.subscription,
      onError: () => {},
      reconnect: { min: 50, max: 500 },
    })
    await until(() => subscriber.state().lastError !== undefined, 10_000, 'a failure')
    expect(subscriber.ready()).toBe(false)
    expect(subscriber.state().status).toBe('starting')
    await emulator('PUT', fixture.subscriptionPath, { topic: fixture.topicPath })
    await until(() => subscriber.ready(), 10_000, 'consuming')
    await fixture.publish(ce('late'))
    await until(() => seen.includes('late'), 15_000, 'the message')
  })

  it('a publish to an unreachable Pub/Sub fails within the timeout instead of pending', async () => {
    // A client pointed at a closed port: every call fails to connect and the client retries.
    const { createServer } = await import('node:net')
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const { port } = s.address() as { port: number }
        s.close(() => resolve(port))
      })
    })
    const client = createEmulatorClient(`127.0.0.1:${port}`)
    const container = createContainer({ source: 'pub-timeout' })
    cleanup.push(
      () => client.close(),
      () => container.close({ drainTimeout: 1_000 }),
    )
    const publisher = pubsubPublisher({ client, topic: 'nowhere', timeout: 500 })
    const subject = container.subject('thing:1')
    const event = {
      id: 'e1',
      type: 'ping',
      source: 'pub-timeout',
      subject: 'thing:1',
      time: Date.now(),
      extra: undefined,
      originId: 'e1',
      payload: {},
    }
    const t0 = performance.now()
    const error = await publisher.send(event, subject).catch((e: unknown) => e)
    const elapsed = performance.now() - t0
    expect(isSubstateError(error)).toBe(true)
    expect((error as Error).message).toMatch(/within 500 ms/)
    expect(elapsed).toBeGreaterThanOrEqual(450)
    expect(elapsed).toBeLessThan(5_000)
    const f0 = performance.now()
    await publisher.flush()
    expect(performance.now() - f0).toBeLessThan(5_000)
  })
})
