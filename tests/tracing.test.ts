/**
 * One trace across services: container A handles an event and routes what it emits to container
 * B, over HTTP on a real socket (`httpEmitter` -> `createReceiver`) and over the Pub/Sub emulator
 * (`pubsubPublisher` -> `pubsubSubscriber`). The W3C trace context travels in the CloudEvents
 * Distributed Tracing extension, so B's unit of work is a child of A's send span.
 */
import { trace } from '@opentelemetry/api'
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base'
import { httpEmitter } from '@substate/cloudevents'
import { type Container, createContainer, type OutboundEmitter } from '@substate/core'
import { createReceiver } from '@substate/hono'
import { pubsubPublisher, pubsubSubscriber } from '@substate/pubsub'
import { listen } from '@substate/test-support/http'
import { createEmulatorClient } from '@substate/test-support/pubsub-client'
import { createEmulatorTopic } from '@substate/test-support/pubsub-emulator'
import { describeWith } from '@substate/test-support/services'
import { afterEach, describe, expect, it } from 'vitest'

const cleanups: Array<() => Promise<unknown>> = []
let exporter: InMemorySpanExporter
let provider: BasicTracerProvider

afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn().catch(() => {})
  trace.disable()
  await provider?.shutdown()
})

function tracing() {
  exporter = new InMemorySpanExporter()
  provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
}

async function until(cond: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting')
    await new Promise((r) => setTimeout(r, 20))
  }
}

const spanNamed = (name: string, source?: string): ReadableSpan | undefined =>
  exporter
    .getFinishedSpans()
    .find(
      (s) =>
        s.name === name &&
        (source === undefined || s.attributes['cloudevents.event_source'] === source),
    )

/** B: handles `order.ship` (sent by A), with its own tracer. */
function serviceB(): { b: Container; shipped: string[] } {
  const b = createContainer({ source: 'svc-b', tracer: provider.getTracer('svc-b') })
  const shipped: string[] = []
  b.on('order.ship', { name: 'pack' }, async (ctx) => {
    await ctx.subject.set('packed', true)
    shipped.push(ctx.subject.name)
  })
  cleanups.push(() => b.close())
  return { b, shipped }
}

/** A: `order.paid` -> a handler emits `order.ship`, routed to `out`. */
function serviceA(out: OutboundEmitter): Container {
  const a = createContainer({ source: 'svc-a', tracer: provider.getTracer('svc-a') })
  a.route('order.ship', out, { policy: 'direct' })
  a.on('order.paid', { name: 'ship' }, async (ctx) => {
    await ctx.emit('order.ship', { sku: 'x' })
  })
  cleanups.push(() => a.close())
  return a
}

/** Checks the trace: A's unit -> ... -> A's send -> B's unit -> B's dispatch -> B's handler. */
function expectOneTrace(): void {
  const aUnit = spanNamed('process order.paid')
  const send = spanNamed('send order.ship')
  const bUnit = spanNamed('process order.ship', 'svc-a') // B's unit of the event A sent
  const bHandler = spanNamed('handle pack')
  expect(aUnit).toBeDefined()
  expect(send).toBeDefined()
  expect(bUnit).toBeDefined()
  expect(bHandler).toBeDefined()
  const traceId = aUnit!.spanContext().traceId
  expect(send!.spanContext().traceId).toBe(traceId)
  expect(bUnit!.spanContext().traceId).toBe(traceId)
  expect(bHandler!.spanContext().traceId).toBe(traceId)
  expect(bUnit!.parentSpanId).toBe(send!.spanContext().spanId)
  expect(bUnit!.kind).toBe(4) // CONSUMER
  expect(send!.kind).toBe(3) // PRODUCER
  expect(bUnit!.attributes['cloudevents.event_type']).toBe('order.ship')
  expect(bUnit!.attributes['substate.origin_id']).toBe(aUnit!.attributes['substate.origin_id'])
}

describe('one trace across two containers over HTTP (real socket)', () => {
  it.each(['binary', 'structured'] as const)('%s mode', async (mode) => {
    tracing()
    const { b, shipped } = serviceB()
    const server = await listen(createReceiver(b, { onError: () => {} }).fetch)
    cleanups.push(() => server.close())
    const a = serviceA(httpEmitter({ url: `${server.url}/`, mode }))
    const r = await a.receive({ id: 'p-1', source: 'shop', type: 'order.paid', subject: 'order:1' })
    expect(r.status).toBe('handled')
    await until(() => shipped.length === 1 && spanNamed('send order.ship') !== undefined)
    expectOneTrace()
  })
})

describeWith('pubsub', 'one trace across two containers over Pub/Sub (emulator)', () => {
  it('pubsubPublisher -> pubsubSubscriber', async () => {
    tracing()
    const fixture = await createEmulatorTopic({ prefix: 'trace' })
    const client = createEmulatorClient()
    cleanups.push(
      () => fixture.delete(),
      () => client.close(),
    )
    const { b, shipped } = serviceB()
    const sub = pubsubSubscriber(b, {
      client,
      subscriptions: fixture.subscription,
      onError: () => {},
    })
    cleanups.push(() => sub.close())
    const a = serviceA(pubsubPublisher({ client, topic: fixture.topic }))
    const r = await a.receive({ id: 'p-2', source: 'shop', type: 'order.paid', subject: 'order:2' })
    expect(r.status).toBe('handled')
    await until(() => shipped.length === 1 && spanNamed('handle pack') !== undefined)
    expectOneTrace()
  })
})
