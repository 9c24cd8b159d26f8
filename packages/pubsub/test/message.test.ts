import type { SubstateEvent } from '@substate/core'
import { fromPubsubMessage, toPubsubMessage } from '@substate/pubsub'
import { describe, expect, it } from 'vitest'

const event: SubstateEvent = {
  id: 'e-1',
  type: 'subject-property-changed',
  source: 'devices',
  subject: 'device:1',
  time: Date.parse('2025-01-02T03:04:05.678Z'),
  payload: { property_name: 'cpu', old_value: 1, value: 95 },
  originId: 'o-1',
  extra: { reason: 'not on the wire' },
  propertyName: 'cpu',
}

const received = (m: { data: Buffer; attributes: Record<string, string> }, id = 'm-1') => ({
  id,
  data: m.data,
  attributes: m.attributes,
  publishTime: new Date('2025-01-01T00:00:00Z'),
})

describe('toPubsubMessage', () => {
  it('writes the CloudEvents Pub/Sub binding: ce- attributes, JSON data', () => {
    const m = toPubsubMessage(event, { Tenant_Id: 'acme', level: 3, tags: ['a'], id: 'shadow' })
    expect(m.attributes).toEqual({
      'ce-specversion': '1.0',
      'ce-id': 'e-1',
      'ce-source': 'devices',
      'ce-type': 'subject-property-changed',
      'ce-subject': 'device:1',
      'ce-time': '2025-01-02T03:04:05.678Z',
      'ce-originid': 'o-1',
      'ce-propertyname': 'cpu',
      'ce-tenantid': 'acme',
      'ce-level': '3',
      'ce-tags': '["a"]',
      'Content-Type': 'application/json',
    })
    expect(JSON.parse(m.data.toString())).toEqual(event.payload)
  })

  it('sends no data for an event without payload', () => {
    const m = toPubsubMessage({ ...event, payload: undefined, propertyName: undefined }, {})
    expect(m.data.length).toBe(0)
    expect(m.attributes['Content-Type']).toBeUndefined()
    expect(m.attributes['ce-propertyname']).toBeUndefined()
  })

  it('adds KRules unprefixed attributes on request', () => {
    const m = toPubsubMessage(event, { tenant_id: 'acme' }, { krules: true })
    expect(m.attributes).toMatchObject({
      id: 'e-1',
      type: 'subject-property-changed',
      source: 'devices',
      subject: 'device:1',
      originid: 'o-1',
      propertyname: 'cpu',
      tenant_id: 'acme',
      datacontenttype: 'application/json',
    })
  })

  it('round-trips through fromPubsubMessage', () => {
    const m = toPubsubMessage(event, { tenant: 'acme' })
    expect(fromPubsubMessage(received(m), 'fallback')).toEqual({
      id: 'e-1',
      source: 'devices',
      type: 'subject-property-changed',
      subject: 'device:1',
      time: event.time,
      payload: event.payload,
      originId: 'o-1',
      propertyName: 'cpu',
      extensions: { tenant: 'acme' },
    })
  })
})

describe('fromPubsubMessage', () => {
  it('reads what a Python KRules publisher sends (unprefixed attributes, text/json)', () => {
    // krules_cloudevents_pubsub.publisher.CloudEventsDispatcher.dispatch: the CloudEvent's
    // attributes unprefixed, the subject's ext props under their own names, `ce-type`,
    // `originid`, `propertyname` and contentType="text/json".
    const attributes = {
      id: '5b0c7d0e-1f6e-4d8a-9b6a-1c2d3e4f5a6b',
      type: 'subject-property-changed',
      source: 'krules-svc',
      subject: 'device:7',
      time: '2025-01-02T03:04:05.678901+00:00',
      datacontenttype: 'application/json',
      specversion: '1.0',
      propertyname: 'temp',
      originid: 'origin-9',
      'ce-type': 'subject-property-changed',
      contentType: 'text/json',
      tenant_id: 'acme',
    }
    const data = Buffer.from(JSON.stringify({ property_name: 'temp', old_value: null, value: 21 }))
    expect(fromPubsubMessage(received({ data, attributes }), 'fallback')).toEqual({
      id: attributes.id,
      source: 'krules-svc',
      type: 'subject-property-changed',
      subject: 'device:7',
      time: Date.parse('2025-01-02T03:04:05.678Z'),
      payload: { property_name: 'temp', old_value: null, value: 21 },
      originId: 'origin-9',
      propertyName: 'temp',
      extensions: { tenantid: 'acme' },
    })
  })

  it('falls back to the message id, the subscription as source and the publish time', () => {
    const e = fromPubsubMessage(
      received({ data: Buffer.from('{"a":1}'), attributes: { type: 'x.y', subject: 's:1' } }, '42'),
      '//pubsub.googleapis.com/projects/p/subscriptions/s',
    )
    expect(e).toMatchObject({
      id: '42',
      source: '//pubsub.googleapis.com/projects/p/subscriptions/s',
      time: Date.parse('2025-01-01T00:00:00Z'),
      payload: { a: 1 },
    })
  })

  it('reads structured mode (application/cloudevents+json)', () => {
    const body = {
      specversion: '1.0',
      id: 'x-1',
      source: 'svc',
      type: 't.created',
      subject: 'thing:1',
      originid: 'o-7',
      region: 'eu',
      data: { n: 1 },
    }
    const e = fromPubsubMessage(
      received({
        data: Buffer.from(JSON.stringify(body)),
        attributes: { 'Content-Type': 'application/cloudevents+json; charset=utf-8' },
      }),
      'fallback',
    )
    expect(e).toMatchObject({
      id: 'x-1',
      source: 'svc',
      type: 't.created',
      subject: 'thing:1',
      originId: 'o-7',
      payload: { n: 1 },
      extensions: { region: 'eu' },
    })
  })

  it('keeps text and binary data as strings', () => {
    const base = {
      'ce-specversion': '1.0',
      'ce-id': '1',
      'ce-source': 's',
      'ce-type': 't',
      'ce-subject': 'x',
    }
    const text = fromPubsubMessage(
      received({
        data: Buffer.from('hello'),
        attributes: { ...base, 'Content-Type': 'text/plain' },
      }),
      'f',
    )
    expect(text.payload).toBe('hello')
    const bin = fromPubsubMessage(
      received({
        data: Buffer.from([1, 2, 3]),
        attributes: { ...base, 'content-type': 'application/octet-stream' },
      }),
      'f',
    )
    expect(bin.payload).toBe('AQID')
  })

  it('rejects what is not an event, naming the attribute', () => {
    const base = {
      'ce-specversion': '1.0',
      'ce-id': '1',
      'ce-source': 's',
      'ce-type': 't',
      'ce-subject': 'x',
    }
    const bad =
      (attributes: Record<string, string>, data = '{}') =>
      () =>
        fromPubsubMessage(received({ data: Buffer.from(data), attributes }), 'f')
    expect(bad({ ...base, 'ce-subject': '' })).toThrow(/ce-subject/)
    expect(bad({ type: 'x' })).toThrow(/subject/)
    expect(bad({ ...base, 'ce-time': 'yesterday' })).toThrow(/ce-time/)
    expect(bad({ ...base, 'Content-Type': 'application/json' }, '{nope')).toThrow(/not JSON/)
    expect(
      bad(
        { 'Content-Type': 'application/cloudevents+json' },
        '{"specversion":"1.0","id":"1","source":"s"}',
      ),
    ).toThrow(/type/)
  })
})
