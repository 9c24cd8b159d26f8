/**
 * KRules 3.1.1 over HTTP, on the recorded traffic (`tests/fixtures/krules/`):
 * - every request KRules' CloudEvents HTTP dispatcher sent is replayed byte for byte (only `Host`
 *   changed) over a real socket to `createReceiver`, and handlers see what KRules meant;
 * - `httpEmitter({ krules: true })` sends requests of the shape KRules' FastAPI receiver was
 *   recorded accepting (it answers binary mode 422).
 */
import { readFileSync } from 'node:fs'
import { connect } from 'node:net'
import { httpEmitter } from '@substate/cloudevents'
import { createContainer, type EventContext } from '@substate/core'
import { createReceiver } from '@substate/hono'
import { listen } from '@substate/test-support/http'
import { Hono } from 'hono'
import { afterEach, describe, expect, it } from 'vitest'

interface RecordedRequest {
  readonly request_line: string
  readonly headers: [string, string][]
  readonly body: string
}
interface RecordedCase {
  readonly title: string
  readonly requests?: RecordedRequest[]
}
interface ReceiverCase {
  readonly title: string
  readonly request: { headers: [string, string][]; body: string }
  readonly status: number
  readonly handler_saw: Record<string, unknown>[]
}

const fixture = <T>(name: string): T =>
  JSON.parse(readFileSync(new URL(`fixtures/krules/${name}`, import.meta.url), 'utf8')) as T

const sent = fixture<{ cases: RecordedCase[] }>('http-requests.json').cases.flatMap((c) =>
  (c.requests ?? []).map((request) => ({ title: c.title, request })),
)
const receiver = fixture<{ cases: ReceiverCase[] }>('http-receiver.json').cases

const cleanups: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

/** Writes `raw` on a socket to 127.0.0.1:`port`; resolves with the status and the body. */
function rawRequest(port: number, raw: Buffer): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    let got = Buffer.alloc(0)
    socket.on('data', (chunk) => {
      got = Buffer.concat([got, chunk])
      const end = got.indexOf('\r\n\r\n')
      if (end < 0) return
      const head = got.subarray(0, end).toString('latin1')
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0)
      if (got.length < end + 4 + length) return
      socket.destroy()
      resolve({
        status: Number(head.split(' ')[1]),
        body: got.subarray(end + 4, end + 4 + length).toString('utf8'),
      })
    })
    socket.on('error', reject)
    socket.write(raw)
  })
}

/** The recorded request as bytes, its `Host` header pointed at `host`. */
function replayBytes(r: RecordedRequest, host: string): Buffer {
  const lines = [r.request_line]
  for (const [name, value] of r.headers)
    lines.push(`${name}: ${name.toLowerCase() === 'host' ? host : value}`)
  return Buffer.concat([
    Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'),
    Buffer.from(r.body),
  ])
}

const CONTEXT = new Set([
  'id',
  'source',
  'type',
  'subject',
  'specversion',
  'time',
  'datacontenttype',
  'dataschema',
  'originid',
  'propertyname',
])

/** What a handler should see for a recorded request, derived from the request itself. */
function expected(r: RecordedRequest) {
  const ce = new Map<string, string>()
  for (const [name, value] of r.headers)
    if (name.toLowerCase().startsWith('ce-')) ce.set(name.toLowerCase().slice(3), value)
  const extensions: Record<string, string> = {}
  for (const [name, value] of ce)
    if (!CONTEXT.has(name)) extensions[name.replace(/[^a-z0-9]/g, '')] = value
  // Python's json.dumps writes bare NaN / Infinity; read as Python's json.loads reads them.
  const payload = JSON.parse(
    r.body.replace(/: (NaN|-?Infinity)([,}])/g, (_m, t: string, end: string) => `: "${t}"${end}`),
    (_k, v) =>
      v === 'NaN' ? Number.NaN : v === 'Infinity' ? Infinity : v === '-Infinity' ? -Infinity : v,
  ) as unknown
  return {
    type: ce.get('type'),
    subject: ce.get('subject'),
    source: ce.get('source'),
    id: ce.get('id'),
    time: Date.parse(ce.get('time')!),
    payload,
    originId: ce.get('originid'),
    propertyName: ce.get('propertyname'),
    extensions: Object.keys(extensions).length > 0 ? extensions : undefined,
  }
}

async function substateReceiver() {
  const container = createContainer({ source: 'substate-svc' })
  container.onError(() => {})
  const seen: EventContext[] = []
  container.on('**', (ctx) => {
    if (ctx.event.source !== 'substate-svc') seen.push(ctx)
  })
  const server = await listen(createReceiver(container).fetch)
  cleanups.push(
    () => server.close(),
    () => container.close(),
  )
  return { container, seen, port: Number(new URL(server.url).port), host: new URL(server.url).host }
}

describe('requests recorded from KRules 3.1.1 HTTP dispatcher, replayed to createReceiver', () => {
  it('the fixture holds the recorded requests', () => {
    expect(sent.length).toBeGreaterThanOrEqual(12)
  })

  it.each(sent)('$title: 202, and handlers see what KRules sent', async ({ request }) => {
    const { seen, port, host } = await substateReceiver()
    const res = await rawRequest(port, replayBytes(request, host))
    expect(res.status, res.body).toBe(202)
    expect(seen).toHaveLength(1)
    const ctx = seen[0]!
    const want = expected(request)
    expect({
      type: ctx.type,
      subject: ctx.subject.name,
      source: ctx.event.source,
      id: ctx.event.id,
      time: ctx.event.time,
      payload: ctx.payload,
      originId: ctx.originId,
      propertyName: ctx.propertyName,
      extensions: ctx.event.extensions,
    }).toEqual(want)
  })

  it('reads ce-tenant_id as extension tenantid and ce-region.code as regioncode', async () => {
    const c = sent.find((s) => s.request.headers.some(([n]) => n === 'ce-region.code'))!
    const { seen, port, host } = await substateReceiver()
    expect((await rawRequest(port, replayBytes(c.request, host))).status).toBe(202)
    expect(seen[0]!.event.extensions).toMatchObject({ regioncode: 'eu', tenantid: 'acme' })
  })

  // Received property events carry their values from the payload, as local ones do (DESIGN §8).
  it('property events: ctx.oldValue / ctx.newValue come from the payload', async () => {
    const c = sent.find((s) => s.title.startsWith('property-changed, old value present'))!
    const { seen, port, host } = await substateReceiver()
    expect((await rawRequest(port, replayBytes(c.request, host))).status).toBe(202)
    expect([seen[0]!.propertyName, seen[0]!.oldValue, seen[0]!.newValue]).toEqual([
      'temp',
      20,
      21.5,
    ])
  })
})

describe('httpEmitter({ krules: true }) sends what KRules 3.1.1 receiver accepted', () => {
  const accepted = receiver.filter((c) => c.status === 200)
  const rejectedBinary = receiver.filter(
    (c) => c.status === 422 && c.request.headers.some(([n]) => n.startsWith('ce-')),
  )

  it('the recorded receiver takes structured mode only', () => {
    expect(rejectedBinary.length).toBeGreaterThan(0)
    const types = new Set(
      accepted.map((c) => c.request.headers.find(([n]) => n === 'content-type')![1]),
    )
    expect(types).toEqual(new Set(['application/cloudevents+json', 'application/json']))
  })

  it('a property event: structured, a content type and body fields as accepted', async () => {
    // The recorded accepted property-changed request, with its extensions.
    const model = accepted.find((c) => c.title.startsWith('structured mode (application/cl'))!
    const modelBody = JSON.parse(model.request.body) as Record<string, unknown>
    const modelType = model.request.headers.find(([n]) => n === 'content-type')![1]

    const requests: { headers: Headers; body: string }[] = []
    const capture = new Hono().post('/', async (c) => {
      requests.push({ headers: c.req.raw.headers, body: await c.req.text() })
      return c.json({ status: 'accepted' })
    })
    const server = await listen(capture.fetch)
    const container = createContainer({ source: 'substate-svc' })
    cleanups.push(
      () => server.close(),
      () => container.close(),
    )
    container.route(
      'subject-property-changed',
      httpEmitter({ url: `${server.url}/`, krules: true }),
    )
    const device = container.subject('device:1')
    await device.setExt('tenant_id', 'acme')
    await device.setExt('flag', true)
    await device.set('temp', 20)
    await device.set('temp', 21.5)
    await device.store()
    const end = Date.now() + 10_000
    while (requests.length < 2 && Date.now() < end) await new Promise((r) => setTimeout(r, 10))

    expect(requests).toHaveLength(2)
    const last = requests[1]!
    expect(last.headers.get('content-type')).toBe(modelType)
    expect([...last.headers.keys()].filter((n) => n.startsWith('ce-'))).toEqual([])
    const body = JSON.parse(last.body) as Record<string, unknown>
    // Same context attributes as the accepted request, each of the same JSON type.
    const context = Object.keys(modelBody).filter((k) => CONTEXT.has(k) || k === 'data')
    expect(
      Object.keys(body)
        .filter((k) => CONTEXT.has(k) || k === 'data')
        .sort(),
    ).toEqual(context.sort())
    for (const k of context) expect(typeof body[k], k).toBe(typeof modelBody[k])
    expect(body.specversion).toBe('1.0')
    expect(body.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/) // as the accepted one
    expect(modelBody.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
    expect(body).toMatchObject({
      type: 'subject-property-changed',
      subject: 'device:1',
      source: 'substate-svc',
      datacontenttype: 'application/json',
      propertyname: 'temp',
      // what KRules' receiver reads into ctx.property_name / old_value / new_value
      data: { property_name: 'temp', old_value: 20, value: 21.5 },
      tenantid: 'acme',
      flag: 'true',
    })
  })

  it('a plain event without payload still has every required attribute', async () => {
    const requests: string[] = []
    const capture = new Hono().post('/', async (c) => {
      requests.push(await c.req.text())
      return c.json({ status: 'accepted' })
    })
    const server = await listen(capture.fetch)
    const container = createContainer({ source: 'substate-svc' })
    cleanups.push(
      () => server.close(),
      () => container.close(),
    )
    container.route('order.*', httpEmitter({ url: `${server.url}/`, krules: true }), {
      policy: 'direct',
    })
    const r = await container.emit('order.paid', 'order:1', undefined)
    expect(r.failures).toEqual([])
    const body = JSON.parse(requests[0]!) as Record<string, unknown>
    for (const k of ['specversion', 'id', 'source', 'type', 'subject'])
      expect(body[k], k).toBeTypeOf('string')
    // KRules' receiver rejects a missing or empty subject (422): Substate events always have one.
    expect(body.subject).toBe('order:1')
  })

  it('refuses krules with binary mode', () => {
    expect(() => httpEmitter({ url: 'http://127.0.0.1:1/', krules: true, mode: 'binary' })).toThrow(
      TypeError,
    )
  })
})
