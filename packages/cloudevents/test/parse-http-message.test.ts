import { parseHttpMessage, toCloudEvent, toHttpMessage } from '@substate/cloudevents'
import type { SubstateEvent } from '@substate/core'
import { CloudEvent, HTTP } from 'cloudevents'
import { describe, expect, it } from 'vitest'

const ce = {
  'ce-specversion': '1.0',
  'ce-id': 'e-1',
  'ce-source': 'sensors',
  'ce-type': 'device.reading',
  'ce-subject': 'device:1',
}
const structured = { specversion: '1.0', id: 'e-1', source: 'sensors', type: 't', subject: 'x' }

const fieldOf = (r: ReturnType<typeof parseHttpMessage>): [number, string] | 'ok' =>
  r.ok ? 'ok' : [r.status, r.error.field]

describe('binary mode', () => {
  it('reads ce- headers and a JSON body', () => {
    const r = parseHttpMessage({
      headers: {
        ...ce,
        'CE-Time': '2025-01-02T03:04:05Z',
        'ce-originid': 'o-1',
        'ce-propertyname': 'cpu',
        'ce-region': 'eu%20west',
        'content-type': 'application/json; charset=utf-8',
      },
      body: '{"cpu":95}',
    })
    expect(r).toEqual({
      ok: true,
      mode: 'binary',
      events: [
        {
          id: 'e-1',
          source: 'sensors',
          type: 'device.reading',
          subject: 'device:1',
          time: Date.UTC(2025, 0, 2, 3, 4, 5),
          originId: 'o-1',
          propertyName: 'cpu',
          extensions: { region: 'eu west' },
          payload: { cpu: 95 },
        },
      ],
    })
  })

  it('accepts a Fetch Headers object and a byte body', () => {
    const r = parseHttpMessage({
      headers: new Headers({ ...ce, 'content-type': 'application/json' }),
      body: new TextEncoder().encode('[1,2]'),
    })
    expect(r.ok && r.events[0]!.payload).toEqual([1, 2])
  })

  it('reads no payload from an empty body, text as a string, other media types as base64', () => {
    const payload = (contentType: string | undefined, body: string | Uint8Array): unknown => {
      const r = parseHttpMessage({
        headers: contentType === undefined ? ce : { ...ce, 'content-type': contentType },
        body,
      })
      if (!r.ok) throw r.error
      return r.events[0]!.payload
    }
    expect(payload('application/json', '')).toBeUndefined()
    expect(payload(undefined, '{"a":1}')).toEqual({ a: 1 })
    expect(payload('text/plain', 'hello')).toBe('hello')
    expect(payload('application/vnd.x+json', '{"a":1}')).toEqual({ a: 1 })
    expect(payload('application/octet-stream', new Uint8Array([0, 1, 2]))).toBe('AAEC')
  })

  it.each([
    [{ 'ce-id': undefined }, 'id'],
    [{ 'ce-id': '' }, 'id'],
    [{ 'ce-source': '' }, 'source'],
    [{ 'ce-source': undefined }, 'source'],
    [{ 'ce-type': '' }, 'type'],
    [{ 'ce-subject': undefined }, 'subject'],
    [{ 'ce-subject': '' }, 'subject'],
    [{ 'ce-specversion': undefined }, 'specversion'],
    [{ 'ce-specversion': '0.3' }, 'specversion'],
    [{ 'ce-time': 'now' }, 'time'],
    [{ 'ce-origin_id': 'x' }, 'origin_id'],
    [{ 'ce-__': 'x' }, '__'],
    [{ 'ce-tenant_id': 'x', 'ce-tenantid': 'y' }, 'tenantid'],
    [{ 'ce-data': 'x' }, 'data'],
  ])('rejects %j with 400 naming %s', (patch, field) => {
    const r = parseHttpMessage({
      headers: { ...ce, 'content-type': 'application/json', ...patch },
      body: '{}',
    })
    expect(fieldOf(r)).toEqual([400, field])
  })

  it('rejects broken JSON with 400 naming data', () => {
    const r = parseHttpMessage({
      headers: { ...ce, 'content-type': 'application/json' },
      body: '{',
    })
    expect(fieldOf(r)).toEqual([400, 'data'])
    expect(!r.ok && r.error.message).toMatch(/not valid JSON/)
  })
})

describe('structured mode', () => {
  it('reads application/cloudevents+json', () => {
    const r = parseHttpMessage({
      headers: { 'content-type': 'application/cloudevents+json; charset=utf-8' },
      body: JSON.stringify({ ...structured, data: { a: 1 }, tier: 2 }),
    })
    expect(r).toMatchObject({
      ok: true,
      mode: 'structured',
      events: [{ id: 'e-1', payload: { a: 1 }, extensions: { tier: 2 } }],
    })
  })

  it('reads a plain application/json body without ce- headers as structured mode', () => {
    const r = parseHttpMessage({
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(structured),
    })
    expect(r).toMatchObject({ ok: true, mode: 'structured' })
  })

  it.each([
    ['{', 'body'],
    ['[]', 'body'],
    ['42', 'body'],
    [JSON.stringify({ ...structured, id: '' }), 'id'],
    [JSON.stringify({ ...structured, 'Sub-Ject': 'x' }), 'Sub-Ject'],
    [JSON.stringify({ ...structured, '--': 1 }), '--'],
  ])('rejects %s with 400 naming %s', (body, field) => {
    const r = parseHttpMessage({
      headers: { 'content-type': 'application/cloudevents+json' },
      body,
    })
    expect(fieldOf(r)).toEqual([400, field])
  })
})

describe('batch mode', () => {
  it('reads an array of events', () => {
    const r = parseHttpMessage({
      headers: { 'content-type': 'application/cloudevents-batch+json' },
      body: JSON.stringify([structured, { ...structured, id: 'e-2', data: 1 }]),
    })
    expect(r).toMatchObject({ ok: true, mode: 'batch', events: [{ id: 'e-1' }, { id: 'e-2' }] })
  })

  it('rejects the whole batch when one event is invalid, naming it by index', () => {
    const r = parseHttpMessage({
      headers: { 'content-type': 'application/cloudevents-batch+json' },
      body: JSON.stringify([structured, { ...structured, source: '' }]),
    })
    expect(fieldOf(r)).toEqual([400, '[1].source'])
    const notArray = parseHttpMessage({
      headers: { 'content-type': 'application/cloudevents-batch+json' },
      body: JSON.stringify(structured),
    })
    expect(fieldOf(notArray)).toEqual([400, 'body'])
    const notObject = parseHttpMessage({
      headers: { 'content-type': 'application/cloudevents-batch+json' },
      body: '[1]',
    })
    expect(fieldOf(notObject)).toEqual([400, '[0]'])
  })
})

describe('unsupported content types', () => {
  it.each([
    [undefined],
    ['text/plain'],
    ['application/xml'],
    ['application/cloudevents+xml'],
    ['multipart/form-data; boundary=x'],
  ])('answers 415 for %s without ce- headers', (contentType) => {
    const r = parseHttpMessage({
      headers: contentType === undefined ? {} : { 'content-type': contentType },
      body: JSON.stringify(structured),
    })
    expect(fieldOf(r)).toEqual([415, 'content-type'])
  })
})

describe('interoperability with the cloudevents SDK', () => {
  const event: SubstateEvent = {
    id: 'e-1',
    type: 'device.alert',
    source: 'sensors',
    subject: 'device:1',
    time: Date.UTC(2025, 0, 1),
    payload: { level: 3, note: 'ünïcode "quoted" 100%' },
    originId: 'o-1',
    extra: undefined,
  }

  it.each(['binary', 'structured'] as const)('the SDK reads our %s messages', (mode) => {
    const cloudEvent = toCloudEvent(event, { region: 'eu-west', rack: 7 })
    const msg = toHttpMessage(cloudEvent, mode)
    const received = HTTP.toEvent({ headers: msg.headers, body: msg.body }) as CloudEvent<unknown>
    expect(received).toMatchObject({
      id: 'e-1',
      type: 'device.alert',
      source: 'sensors',
      subject: 'device:1',
      data: event.payload,
      originid: 'o-1',
      region: 'eu-west',
      rack: '7',
    })
  })

  it.each(['binary', 'structured'] as const)('we read the SDK %s messages', (mode) => {
    const sdkEvent = new CloudEvent({
      id: 'e-2',
      type: 't',
      source: 's',
      subject: 'x',
      data: { a: [1, 2] },
      originid: 'o-2',
      tier: 'gold',
    })
    const msg = mode === 'binary' ? HTTP.binary(sdkEvent) : HTTP.structured(sdkEvent)
    const r = parseHttpMessage({ headers: msg.headers, body: msg.body as string })
    expect(r).toMatchObject({
      ok: true,
      events: [
        { id: 'e-2', payload: { a: [1, 2] }, originId: 'o-2', extensions: { tier: 'gold' } },
      ],
    })
  })

  it('percent-encodes header values and decodes them back', () => {
    const cloudEvent = toCloudEvent(
      { ...event, subject: 'room 1 "east" 50% ☃' },
      { city: 'São Paulo' },
    )
    const msg = toHttpMessage(cloudEvent, 'binary')
    expect(msg.headers['ce-subject']).toBe('room%201%20%22east%22%2050%25%20%E2%98%83')
    for (const v of Object.values(msg.headers)) expect(v).toMatch(/^[\x21-\x7e]*$/)
    const r = parseHttpMessage(msg)
    expect(r).toMatchObject({
      ok: true,
      events: [{ subject: 'room 1 "east" 50% ☃', extensions: { city: 'São Paulo' } }],
    })
  })

  it('keeps a header value with a stray % as sent (senders that do not encode)', () => {
    const r = parseHttpMessage({ headers: { ...ce, 'ce-note': '100%' }, body: '' })
    expect(r.ok && r.events[0]!.extensions).toEqual({ note: '100%' })
  })
})

describe('what Python KRules sends', () => {
  const krules = {
    'ce-source': 'my-service',
    'ce-id': 'c46118be',
    'ce-type': 'order.created',
    'ce-specversion': '1.0',
    'ce-time': '2026-11-29T22:42:26.726468+00:00',
    'ce-subject': 'order:1',
    'ce-datacontenttype': 'None',
    'ce-dataschema': 'None',
    'ce-originid': 'c46118be',
    'content-type': 'application/json',
  }

  it('reads extension names outside the alphabet normalised, None as absent, isoformat() times', () => {
    const r = parseHttpMessage({
      headers: {
        ...krules,
        'ce-tenant_id': 'acme',
        'ce-region.code': 'eu',
        'ce-flag': 'True',
        'ce-nothing': 'None',
      },
      body: '{"a": 1}',
    })
    expect(r).toEqual({
      ok: true,
      mode: 'binary',
      events: [
        {
          id: 'c46118be',
          source: 'my-service',
          type: 'order.created',
          subject: 'order:1',
          time: Date.UTC(2026, 10, 29, 22, 42, 26, 726),
          originId: 'c46118be',
          payload: { a: 1 },
          // Values stay the text KRules sent (`str(value)` in Python).
          extensions: { tenantid: 'acme', regioncode: 'eu', flag: 'True', nothing: 'None' },
        },
      ],
    })
  })

  it('treats ce-__proto__ like any other name: read as extension "proto", never dropped', () => {
    const r = parseHttpMessage({ headers: { ...krules, 'ce-__proto__': 'x' }, body: '{}' })
    expect(r.ok && r.events[0]!.extensions).toEqual({ proto: 'x' })
    expect(Object.getPrototypeOf(r.ok && r.events[0]!.extensions)).toBe(Object.prototype)
  })

  it("reads Python's bare NaN / Infinity / -Infinity tokens as those numbers, outside strings only", () => {
    const r = parseHttpMessage({
      headers: krules,
      body: '{"nan": NaN, "inf": Infinity, "ninf": -Infinity, "s": "NaN Infinity \\" NaN", "l": [NaN]}',
    })
    expect(r.ok && r.events[0]!.payload).toEqual({
      nan: Number.NaN,
      inf: Number.POSITIVE_INFINITY,
      ninf: Number.NEGATIVE_INFINITY,
      s: 'NaN Infinity " NaN',
      l: [Number.NaN],
    })
  })

  it.each([
    ['{"a": NaN', 'data'],
    ['{"a": NaNa}', 'data'],
    ['{"a": nan}', 'data'],
  ])('still rejects JSON that is broken otherwise: %s', (body, field) => {
    expect(fieldOf(parseHttpMessage({ headers: krules, body }))).toEqual([400, field])
  })

  it('keeps a dataschema that is not None', () => {
    const r = parseHttpMessage({
      headers: { ...krules, 'ce-dataschema': 'https://example.com/s.json' },
      body: '{}',
    })
    expect(r.ok).toBe(true)
  })
})

describe('Distributed Tracing extension', () => {
  const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
  it('keeps ce-traceparent / ce-tracestate as extensions', () => {
    const r = parseHttpMessage({
      headers: { ...ce, 'ce-traceparent': tp, 'ce-tracestate': 'k=v' },
      body: '',
    })
    expect(r.ok && r.events[0]!.extensions).toEqual({ traceparent: tp, tracestate: 'k=v' })
  })
  it('takes plain traceparent / tracestate headers when the event carries none', () => {
    const binary = parseHttpMessage({
      headers: { ...ce, traceparent: tp, tracestate: 'k=v' },
      body: '',
    })
    expect(binary.ok && binary.events[0]!.extensions).toEqual({
      traceparent: tp,
      tracestate: 'k=v',
    })
    const s = parseHttpMessage({
      headers: { 'content-type': 'application/cloudevents+json', traceparent: tp },
      body: JSON.stringify(structured),
    })
    expect(s.ok && s.events[0]!.extensions).toEqual({ traceparent: tp })
  })
  it("prefers the event's own traceparent to the HTTP header", () => {
    const own = '00-11111111111111111111111111111111-2222222222222222-01'
    const r = parseHttpMessage({
      headers: { ...ce, 'ce-traceparent': own, traceparent: tp },
      body: '',
    })
    expect(r.ok && r.events[0]!.extensions?.traceparent).toBe(own)
  })
})
