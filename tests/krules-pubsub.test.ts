/**
 * KRules 3.1.1 over Pub/Sub, on the recorded traffic (`tests/fixtures/krules/pubsub-attributes.json`):
 * the `publish(topic, data, **attributes)` calls KRules' Pub/Sub dispatcher made are understood by
 * `fromPubsubMessage`, and, published with exactly those attributes and data on the emulator, by
 * `pubsubSubscriber`.
 */
import { readFileSync } from 'node:fs'
import { createContainer, type EventContext } from '@substate/core'
import { fromPubsubMessage, pubsubSubscriber } from '@substate/pubsub'
import { createEmulatorClient } from '@substate/test-support/pubsub-client'
import { createEmulatorTopic } from '@substate/test-support/pubsub-emulator'
import { describeWith } from '@substate/test-support/services'
import { afterEach, describe, expect, it } from 'vitest'

interface PublishCall {
  readonly topic: string
  readonly data_text: string
  readonly data_base64: string
  readonly attrs_as_passed: Record<string, string | { python_type: string; repr: string }>
  readonly real_client_would_raise: string | null
}
interface RecordedCase {
  readonly title: string
  readonly publish_calls: PublishCall[]
}

const recorded = (
  JSON.parse(
    readFileSync(new URL('fixtures/krules/pubsub-attributes.json', import.meta.url), 'utf8'),
  ) as { cases: RecordedCase[] }
).cases.flatMap((c) => c.publish_calls.map((call) => ({ title: c.title, call })))

// What the real client publishes: calls whose attributes are all text.
const published = recorded.filter(({ call }) => call.real_client_would_raise === null)
const attributesOf = (call: PublishCall): Record<string, string> =>
  call.attrs_as_passed as Record<string, string>

const NOT_EXTENSIONS = new Set([
  'source',
  'id',
  'type',
  'time',
  'subject',
  'datacontenttype',
  'dataschema',
  'originid',
  'propertyname',
  'ce-type',
  'contentType',
])

/** What a handler should see, derived from the recorded call itself. */
function expected(call: PublishCall) {
  const a = attributesOf(call)
  const extensions: Record<string, string> = {}
  for (const [k, v] of Object.entries(a))
    if (!NOT_EXTENSIONS.has(k)) extensions[k.toLowerCase().replace(/[^a-z0-9]/g, '')] = v
  return {
    id: a.id,
    source: a.source,
    type: a.type,
    subject: a.subject,
    time: Date.parse(a.time!),
    payload: JSON.parse(call.data_text) as unknown,
    originId: a.originid,
    propertyName: a.propertyname,
    extensions: Object.keys(extensions).length > 0 ? extensions : undefined,
  }
}

describe('Pub/Sub messages recorded from KRules 3.1.1 dispatcher: fromPubsubMessage', () => {
  it('the fixture holds the recorded calls; KRules sends no specversion', () => {
    expect(published.length).toBeGreaterThanOrEqual(7)
    for (const { call } of published) expect(attributesOf(call)).not.toHaveProperty('specversion')
  })

  it.each(published)('$title', ({ call }) => {
    const event = fromPubsubMessage(
      {
        id: 'pubsub-message-id',
        data: Buffer.from(call.data_base64, 'base64'),
        attributes: attributesOf(call),
      },
      '//pubsub.googleapis.com/projects/p/subscriptions/s',
    )
    const want = expected(call)
    expect({
      ...event,
      originId: event.originId,
      propertyName: event.propertyName,
      extensions: event.extensions,
    }).toEqual(want)
  })

  it('the camelCase and snake_case ext property names arrive normalised (tenantId → tenantid)', () => {
    const { call } = published.find(({ call }) => 'tenantId' in call.attrs_as_passed)!
    const e = fromPubsubMessage(
      { id: 'm', data: Buffer.from(call.data_text), attributes: attributesOf(call) },
      'f',
    )
    expect(e.extensions).toEqual({ tenant: 'acme', tenantid: 't-1' })
  })
})

describe('KRules Pub/Sub data beyond the recording', () => {
  const attributes = attributesOf(published[0]!.call)

  it("reads Python's bare NaN / Infinity in the data as those numbers", () => {
    const e = fromPubsubMessage(
      { id: 'm', data: Buffer.from('{"nan": NaN, "inf": Infinity, "s": "NaN"}'), attributes },
      'f',
    )
    expect(e.payload).toEqual({ nan: Number.NaN, inf: Number.POSITIVE_INFINITY, s: 'NaN' })
  })

  it('rejects declared JSON that is not JSON, naming data', () => {
    expect(() =>
      fromPubsubMessage({ id: 'm', data: Buffer.from('{nope'), attributes }, 'f'),
    ).toThrow(expect.objectContaining({ field: 'data' }))
  })

  it('rejects an attribute that reads as a context attribute, naming it', () => {
    expect(() =>
      fromPubsubMessage(
        { id: 'm', data: Buffer.from('{}'), attributes: { ...attributes, origin_id: 'x' } },
        'f',
      ),
    ).toThrow(expect.objectContaining({ field: 'origin_id' }))
    expect(() =>
      fromPubsubMessage(
        { id: 'm', data: Buffer.from('{}'), attributes: { ...attributes, data: 'x' } },
        'f',
      ),
    ).toThrow(expect.objectContaining({ field: 'data' }))
  })
})

const cleanup: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn()
})

describeWith('pubsub', 'KRules messages through the emulator to pubsubSubscriber', () => {
  it('every recorded message, published with exactly its attributes and data, is handled', async () => {
    const fixture = await createEmulatorTopic({ prefix: 'krules' })
    const client = createEmulatorClient()
    const container = createContainer({ source: 'substate-svc' })
    container.onError(() => {})
    cleanup.push(
      () => fixture.delete(),
      () => client.close(),
      () => container.close(),
    )
    const seen = new Map<string, EventContext>()
    container.on('**', async (ctx) => {
      if (ctx.event.source === 'substate-svc') return // its own property events
      seen.set(ctx.event.id, ctx)
      await ctx.subject.set('seen', true)
    })
    const sub = pubsubSubscriber(container, {
      client,
      subscriptions: fixture.subscription,
      onError: () => {},
    })
    cleanup.push(() => sub.close())
    await fixture.publish(
      ...published.map(({ call }) => ({ data: call.data_text, attributes: attributesOf(call) })),
    )
    const end = Date.now() + 20_000
    while (sub.stats().acked < published.length && Date.now() < end)
      await new Promise((r) => setTimeout(r, 25))
    expect(sub.stats()).toMatchObject({ acked: published.length, nacked: 0 })
    for (const { call } of published) {
      const want = expected(call)
      const ctx = seen.get(want.id!)
      expect(ctx, want.id).toBeDefined()
      expect({
        type: ctx!.type,
        subject: ctx!.subject.name,
        source: ctx!.event.source,
        time: ctx!.event.time,
        payload: ctx!.payload,
        originId: ctx!.originId,
        propertyName: ctx!.propertyName,
        extensions: ctx!.event.extensions,
      }).toEqual({
        type: want.type,
        subject: want.subject,
        source: want.source,
        time: want.time,
        payload: want.payload,
        originId: want.originId,
        propertyName: want.propertyName,
        extensions: want.extensions,
      })
    }
  })
})
