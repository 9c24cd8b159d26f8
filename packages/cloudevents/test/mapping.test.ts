import { extensionName, fromCloudEvent, toCloudEvent } from '@substate/cloudevents'
import type { SubstateEvent } from '@substate/core'
import { isSubstateError } from '@substate/core'
import { CloudEvent } from 'cloudevents'
import { describe, expect, it } from 'vitest'

const event = (over: Partial<SubstateEvent> = {}): SubstateEvent => ({
  id: 'e-1',
  type: 'subject-property-changed',
  source: 'sensors',
  subject: 'device:1',
  time: Date.UTC(2025, 0, 2, 3, 4, 5, 678),
  payload: { property_name: 'cpu', old_value: 10, value: 95 },
  originId: 'o-1',
  extra: { reason: 'not on the wire' },
  propertyName: 'cpu',
  oldValue: 10,
  newValue: 95,
  ...over,
})

describe('toCloudEvent', () => {
  it('maps the attributes, originid and propertyname', () => {
    expect(toCloudEvent(event())).toEqual({
      specversion: '1.0',
      id: 'e-1',
      type: 'subject-property-changed',
      source: 'sensors',
      subject: 'device:1',
      time: '2025-01-02T03:04:05.678Z',
      datacontenttype: 'application/json',
      data: { property_name: 'cpu', old_value: 10, value: 95 },
      originid: 'o-1',
      propertyname: 'cpu',
    })
  })

  it('leaves out data when there is no payload, and propertyname on other events', () => {
    const ce = toCloudEvent(
      event({ type: 'device.ping', payload: undefined, propertyName: undefined }),
    )
    expect(ce).not.toHaveProperty('data')
    expect(ce).not.toHaveProperty('propertyname')
  })

  it('carries ext properties as extensions: names made valid, values stringified', () => {
    const ce = toCloudEvent(event(), {
      region: 'eu-west',
      Tenant_ID: 'acme',
      count: 3,
      ratio: 0.5,
      enabled: false,
      tags: ['a', 'b'],
      meta: { x: 1 },
      gone: null,
    })
    expect(ce).toMatchObject({
      region: 'eu-west',
      tenantid: 'acme',
      count: '3',
      ratio: '0.5',
      enabled: 'false',
      tags: '["a","b"]',
      meta: '{"x":1}',
    })
    expect(ce).not.toHaveProperty('gone')
    // the SDK (strict) accepts what we produce
    expect(() => new CloudEvent(ce)).not.toThrow()
  })

  it('never lets an ext property override an attribute, and skips names with nothing left', () => {
    const ce = toCloudEvent(event(), {
      id: 'evil',
      Subject: 'evil',
      originId: 'evil',
      'property-name': 'evil',
      ___: 'x',
      ü: 'x',
    })
    expect(ce.id).toBe('e-1')
    expect(ce.subject).toBe('device:1')
    expect(ce.originid).toBe('o-1')
    expect(ce.propertyname).toBe('cpu')
    expect(Object.keys(ce).sort()).toEqual([
      'data',
      'datacontenttype',
      'id',
      'originid',
      'propertyname',
      'source',
      'specversion',
      'subject',
      'time',
      'type',
    ])
  })

  it('resolves two ext properties mapping to one name deterministically: the valid name wins', () => {
    expect(toCloudEvent(event(), { Region: 'a', region: 'b' }).region).toBe('b')
    expect(toCloudEvent(event(), { region: 'b', Region: 'a' }).region).toBe('b')
    // neither valid: the first in code-point order ('-' sorts before 'g')
    expect(toCloudEvent(event(), { Region: 'c', 'Re-gion': 'a' }).region).toBe('a')
  })

  it("throws a ValidationError naming the ext property with onInvalidExtension: 'throw'", () => {
    const err = (() => {
      try {
        toCloudEvent(event(), { _: 1 }, { onInvalidExtension: 'throw' })
      } catch (e) {
        return e
      }
    })()
    expect(isSubstateError(err, 'VALIDATION')).toBe(true)
    expect(err).toMatchObject({ field: 'extensions._' })
    expect(() =>
      toCloudEvent(event(), { Region: 'a', region: 'b' }, { onInvalidExtension: 'throw' }),
    ).toThrow(/already taken/)
  })

  it('forwards the extensions a received event arrived with', () => {
    const ce = toCloudEvent(event({ extensions: { traceparent: '00-abc', hops: 2 } }), {
      hops: 3,
    })
    expect(ce).toMatchObject({ traceparent: '00-abc', hops: '3' })
  })
})

describe('extensionName', () => {
  it.each([
    ['region', 'region'],
    ['Region', 'region'],
    ['tenant_id', 'tenantid'],
    ['Tenant-ID', 'tenantid'],
    ['a1.b2', 'a1b2'],
    ['', undefined],
    ['__', undefined],
    ['time', undefined],
    ['DataContentType', undefined],
    ['originid', undefined],
  ])('%j → %j', (name, expected) => {
    expect(extensionName(name)).toBe(expected)
  })
})

describe('fromCloudEvent', () => {
  it('round-trips toCloudEvent', () => {
    const incoming = fromCloudEvent(toCloudEvent(event(), { region: 'eu', level: 3 }))
    expect(incoming).toEqual({
      id: 'e-1',
      source: 'sensors',
      type: 'subject-property-changed',
      subject: 'device:1',
      time: Date.UTC(2025, 0, 2, 3, 4, 5, 678),
      payload: { property_name: 'cpu', old_value: 10, value: 95 },
      originId: 'o-1',
      propertyName: 'cpu',
      extensions: { region: 'eu', level: '3' },
    })
  })

  it('reads an SDK CloudEvent', () => {
    const ce = new CloudEvent({
      id: '1',
      source: 'src',
      type: 't',
      subject: 's',
      data: [1, 2],
      originid: 'o',
      tier: 'gold',
    })
    expect(fromCloudEvent(ce)).toMatchObject({
      id: '1',
      payload: [1, 2],
      originId: 'o',
      extensions: { tier: 'gold' },
    })
  })

  it('decodes data_base64 when the content type is JSON, keeps it as base64 otherwise', () => {
    const base = { specversion: '1.0', id: '1', source: 's', type: 't', subject: 'x' }
    const b64 = Buffer.from('{"a":1}').toString('base64')
    expect(fromCloudEvent({ ...base, data_base64: b64 }).payload).toEqual({ a: 1 })
    expect(
      fromCloudEvent({ ...base, datacontenttype: 'image/png', data_base64: 'AAEC' }).payload,
    ).toBe('AAEC')
  })

  const valid = { specversion: '1.0', id: '1', source: 's', type: 't', subject: 'x' }
  it.each([
    [{ ...valid, id: undefined }, 'id'],
    [{ ...valid, id: '' }, 'id'],
    [{ ...valid, id: 7 }, 'id'],
    [{ ...valid, source: '' }, 'source'],
    [{ ...valid, source: undefined }, 'source'],
    [{ ...valid, type: '' }, 'type'],
    [{ ...valid, type: null }, 'type'],
    [{ ...valid, subject: undefined }, 'subject'],
    [{ ...valid, subject: '' }, 'subject'],
    [{ ...valid, specversion: undefined }, 'specversion'],
    [{ ...valid, specversion: '0.3' }, 'specversion'],
    [{ ...valid, specversion: '' }, 'specversion'],
    [{ ...valid, time: 'yesterday' }, 'time'],
    [{ ...valid, time: '2025-13-45T99:00:00Z' }, 'time'],
    [{ ...valid, Origin_ID: 'x' }, 'Origin_ID'],
    [{ ...valid, '-_-': 'x' }, '-_-'],
    [{ ...valid, obj: { a: 1 } }, 'obj'],
    [{ ...valid, originid: '' }, 'originid'],
    [{ ...valid, data: 1, data_base64: 'AA==' }, 'data'],
    [{ ...valid, data_base64: 'bm90IGpzb24=' }, 'data_base64'],
    [[valid], 'body'],
    ['event', 'body'],
    [null, 'body'],
  ])('rejects %j naming %s', (input, field) => {
    let error: unknown
    try {
      fromCloudEvent(input)
    } catch (e) {
      error = e
    }
    expect(isSubstateError(error, 'VALIDATION')).toBe(true)
    expect(error).toMatchObject({ field })
  })
})
