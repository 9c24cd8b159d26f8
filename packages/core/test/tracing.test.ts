import { trace } from '@opentelemetry/api'
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createContainer, type OutboundEmitter, type SubstateEvent } from '../src/index.js'

let exporter: InMemorySpanExporter
let provider: BasicTracerProvider

beforeEach(() => {
  exporter = new InMemorySpanExporter()
  provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
})
afterEach(async () => {
  trace.disable()
  await provider.shutdown()
})

const parentOf = (s: ReadableSpan): string | undefined => s.parentSpanId
const byName = (spans: ReadableSpan[], name: string): ReadableSpan => {
  const s = spans.find((x) => x.name === name)
  if (s === undefined) throw new Error(`no span ${name} in ${spans.map((x) => x.name).join(', ')}`)
  return s
}

describe('tracing', () => {
  it('nests a cascade: unit -> dispatch -> handler -> nested dispatch -> handler, and the commit under the unit', async () => {
    const c = createContainer({ tracer: provider.getTracer('test') })
    c.on('order.created', { name: 'reserve' }, async (ctx) => {
      await ctx.subject.set('status', 'reserved')
    })
    c.on('subject-property-changed', { name: 'audit' }, async () => {})
    const r = await c.receive({
      id: 'e-1',
      source: 'shop',
      type: 'order.created',
      subject: 'order:1',
      originId: 'o-1',
    })
    expect(r.status).toBe('handled')
    const spans = exporter.getFinishedSpans()
    const unit = byName(spans, 'process order.created')
    const dispatch = byName(spans, 'dispatch order.created')
    const reserve = byName(spans, 'handle reserve')
    const nested = byName(spans, 'dispatch subject-property-changed')
    const audit = byName(spans, 'handle audit')
    const commit = byName(spans, 'commit storage-memory')
    const id = (s: ReadableSpan) => s.spanContext().spanId
    expect(parentOf(unit)).toBeUndefined()
    expect(parentOf(dispatch)).toBe(id(unit))
    expect(parentOf(reserve)).toBe(id(dispatch))
    expect(parentOf(nested)).toBe(id(reserve))
    expect(parentOf(audit)).toBe(id(nested))
    expect(parentOf(commit)).toBe(id(unit))
    // One trace.
    expect(new Set(spans.map((s) => s.spanContext().traceId)).size).toBe(1)
    expect(unit.attributes).toMatchObject({
      'messaging.system': 'substate',
      'messaging.operation.type': 'process',
      'messaging.message.id': 'e-1',
      'cloudevents.event_id': 'e-1',
      'cloudevents.event_type': 'order.created',
      'cloudevents.event_subject': 'order:1',
      'cloudevents.event_source': 'shop',
      'substate.origin_id': 'o-1',
    })
    expect(reserve.attributes['substate.handler']).toBe('reserve')
    expect(nested.attributes['substate.origin_id']).toBe('o-1')
    await c.close()
  })

  it('continues the trace an event arrived with (traceparent) and records retries as span events', async () => {
    const c = createContainer({ tracer: provider.getTracer('test') })
    c.onError(() => {})
    let calls = 0
    c.on('x', { name: 'flaky', retry: { attempts: 3, backoff: { initial: 1, max: 1 } } }, () => {
      if (++calls < 3) throw new Error(`try ${calls}`)
    })
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736'
    await c.receive({
      id: '1',
      source: 's',
      type: 'x',
      subject: 'a',
      extensions: { traceparent: `00-${traceId}-00f067aa0ba902b7-01`, tracestate: 'k=v' },
    })
    const spans = exporter.getFinishedSpans()
    const unit = byName(spans, 'process x')
    expect(unit.spanContext().traceId).toBe(traceId)
    expect(unit.parentSpanId).toBe('00f067aa0ba902b7')
    const flaky = byName(spans, 'handle flaky')
    const retries = flaky.events.filter((e) => e.name === 'retry')
    expect(retries.map((e) => e.attributes?.['substate.attempt'])).toEqual([1, 2])
    expect(retries[0]!.attributes?.['exception.message']).toBe('try 1')
    expect(flaky.status.code).not.toBe(2)
    await c.close()
  })

  it('marks a failed handler span; a failed unit sends nothing (no send span)', async () => {
    const c = createContainer({ tracer: provider.getTracer('test') })
    c.onError(() => {})
    const sent: SubstateEvent[] = []
    const out: OutboundEmitter = { name: 'remote', send: async (e) => void sent.push(e) }
    c.route('order.shipped', out)
    c.on('order.paid', async (ctx) => {
      await ctx.emit('order.shipped', { n: 1 })
    })
    c.on('order.paid', { name: 'broken' }, async () => {
      throw new Error('nope')
    })
    const r = await c.receive({ id: '1', source: 's', type: 'order.paid', subject: 'order:9' })
    expect(r.status).toBe('failed')
    await c.close() // the relay's sends would finish here
    const spans = exporter.getFinishedSpans()
    expect(spans.some((s) => s.name.startsWith('send '))).toBe(false)
    expect(sent).toHaveLength(0)
    expect(byName(spans, 'process order.paid').status.code).toBe(2)
    const broken = byName(spans, 'handle broken')
    expect(broken.status.code).toBe(2)
    expect(broken.events.some((e) => e.name === 'exception')).toBe(true)
  })

  it('puts the send span in the traceparent of what goes out after a unit committed', async () => {
    const c = createContainer({ tracer: provider.getTracer('test') })
    const sent: SubstateEvent[] = []
    c.route('order.shipped', { name: 'remote', send: async (e) => void sent.push(e) })
    c.on('order.paid', async (ctx) => {
      await ctx.emit('order.shipped', { n: 1 })
    })
    await c.receive({ id: '1', source: 's', type: 'order.paid', subject: 'order:9' })
    await c.close()
    expect(sent).toHaveLength(1)
    const spans = exporter.getFinishedSpans()
    const send = byName(spans, 'send order.shipped')
    expect(send.kind).toBe(3) // PRODUCER
    expect(send.attributes['substate.emitter']).toBe('remote')
    const sc = send.spanContext()
    expect(sent[0]!.extensions?.traceparent).toBe(`00-${sc.traceId}-${sc.spanId}-01`)
    // handler -> dispatch order.shipped -> send
    const dispatch = byName(spans, 'dispatch order.shipped')
    expect(send.parentSpanId).toBe(dispatch.spanContext().spanId)
    const handler = spans.find((s) => s.name.startsWith('handle '))!
    expect(dispatch.parentSpanId).toBe(handler.spanContext().spanId)
  })

  it('tracing: true uses the global provider; in-process emits are traced too', async () => {
    trace.setGlobalTracerProvider(provider)
    const c = createContainer({ tracing: true })
    c.on('ping', { name: 'pong' }, async () => {})
    await c.emit('ping', 's')
    const names = exporter.getFinishedSpans().map((s) => s.name)
    expect(names).toEqual(['handle pong', 'dispatch ping'])
    await c.close()
  })

  it('makes no spans without a tracer, even with a global provider registered', async () => {
    trace.setGlobalTracerProvider(provider)
    const c = createContainer()
    c.on('ping', async () => {})
    await c.emit('ping', 's')
    await c.receive({ id: '1', source: 's', type: 'ping', subject: 'a' })
    expect(exporter.getFinishedSpans()).toEqual([])
    await c.close()
  })
})
