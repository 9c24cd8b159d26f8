import { createContainer, createMemoryStorage, type SubjectStorage } from '@substate/core'
import { createReceiver } from '@substate/hono'
import type { Hono } from 'hono'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { binary, listen, structured } from './_support.js'

interface Answer {
  readonly error?: string
  readonly field?: string
  readonly status?: string
  readonly results?: unknown
}
const read = (res: Response): Promise<Answer> => res.json() as Promise<Answer>

type Send = (path: string, init?: RequestInit) => Promise<Response>

interface Env {
  storage: SubjectStorage
  container: ReturnType<typeof createContainer>
  app: Hono
  send: Send
  handled: string[]
}

const transports = ['app.request', 'socket'] as const

describe.each(transports)('receiver through %s', (transport) => {
  let env: Env
  let stop: (() => Promise<void>) | undefined

  beforeEach(async () => {
    const storage = createMemoryStorage()
    const container = createContainer({ storage, source: 'receiver' })
    container.onError(() => {})
    const handled: string[] = []
    container.on('device.reading', async (ctx) => {
      handled.push(ctx.id)
      await ctx.subject.set('cpu', (ctx.payload as { cpu: number }).cpu)
    })
    const app = createReceiver(container, { maxBodySize: 1024, onError: () => {} })
    let send: Send = async (path, init) => app.request(path, init)
    if (transport === 'socket') {
      const server = await listen(app.fetch)
      stop = server.close
      send = (path, init) => fetch(server.url + path, init)
    }
    env = { storage, container, app, send, handled }
  })

  afterEach(async () => {
    await stop?.()
    stop = undefined
    await env.container.close()
  })

  const post = (headers: Record<string, string>, body?: RequestInit['body']): Promise<Response> =>
    env.send('/', { method: 'POST', headers, body })

  it('binary mode: 202 once handled and stored', async () => {
    const res = await post(binary(), JSON.stringify({ cpu: 95 }))
    expect(res.status).toBe(202)
    expect(await read(res)).toEqual({ status: 'handled' })
    // stored before the answer: read storage itself, not the container's cache
    expect((await env.storage.load('device:1')).props).toEqual({ cpu: 95 })
  })

  it('structured mode: 202 once handled and stored', async () => {
    const res = await post(
      { 'content-type': 'application/cloudevents+json' },
      JSON.stringify(structured({ data: { cpu: 42 } })),
    )
    expect(res.status).toBe(202)
    expect((await env.storage.load('device:1')).props).toEqual({ cpu: 42 })
  })

  it('batch mode: 202 once every event is handled and stored', async () => {
    const res = await post(
      { 'content-type': 'application/cloudevents-batch+json' },
      JSON.stringify([
        structured({ id: 'a', data: { cpu: 1 } }),
        structured({ id: 'b', data: { cpu: 2 } }),
        structured({ id: 'c', subject: 'device:2', data: { cpu: 3 } }),
      ]),
    )
    expect(res.status).toBe(202)
    expect(await read(res)).toEqual({
      results: [
        { id: 'a', status: 'handled' },
        { id: 'b', status: 'handled' },
        { id: 'c', status: 'handled' },
      ],
    })
    expect((await env.storage.load('device:1')).props).toEqual({ cpu: 2 })
    expect((await env.storage.load('device:2')).props).toEqual({ cpu: 3 })
  })

  it('acknowledges a duplicate source+id without handling it again', async () => {
    expect((await post(binary(), '{"cpu":1}')).status).toBe(202)
    const again = await post(binary(), '{"cpu":2}')
    expect(again.status).toBe(202)
    expect(await read(again)).toEqual({ status: 'duplicate' })
    expect(env.handled).toEqual(['e-1'])
    expect((await env.storage.load('device:1')).props).toEqual({ cpu: 1 })
  })

  it('answers 500 when a handler fails, and stores nothing of that unit', async () => {
    env.container.on('device.reading', () => {
      throw new Error('boom')
    })
    const res = await post(binary(), '{"cpu":5}')
    expect(res.status).toBe(500)
    const body = await read(res)
    expect(body).toEqual({
      error: expect.stringMatching(/handler failed/),
      errorId: expect.any(String),
    })
    expect(JSON.stringify(body)).not.toMatch(/boom/) // internal text stays in the log
    expect((await env.storage.load('device:1')).props).toEqual({})
  })

  it('answers a partly failed batch 500 with per-event results; resending it is safe', async () => {
    let fail = true
    env.container.on('device.reading', (ctx) => {
      if (fail && ctx.id === 'b') throw new Error('b failed')
    })
    const batch = JSON.stringify([
      structured({ id: 'a', data: { cpu: 1 } }),
      structured({ id: 'b', subject: 'device:2', data: { cpu: 2 } }),
    ])
    const headers = { 'content-type': 'application/cloudevents-batch+json' }
    const first = await post(headers, batch)
    expect(first.status).toBe(500)
    expect(await read(first)).toMatchObject({
      results: [
        { id: 'a', status: 'handled' },
        { id: 'b', status: 'failed', error: expect.any(String), errorId: expect.any(String) },
      ],
    })
    fail = false
    const second = await post(headers, batch)
    expect(second.status).toBe(202)
    expect(await read(second)).toEqual({
      results: [
        { id: 'a', status: 'duplicate' },
        { id: 'b', status: 'handled' },
      ],
    })
    expect(env.handled).toEqual(['a', 'b', 'b'])
  })

  describe('bad input', () => {
    it.each([
      ['ce-id', undefined, 'id'],
      ['ce-id', '', 'id'],
      ['ce-source', undefined, 'source'],
      ['ce-source', '', 'source'],
      ['ce-type', undefined, 'type'],
      ['ce-type', '', 'type'],
      ['ce-specversion', undefined, 'specversion'],
      ['ce-specversion', '', 'specversion'],
      ['ce-specversion', '0.3', 'specversion'],
      ['ce-subject', undefined, 'subject'],
      ['ce-subject', '', 'subject'],
      ['ce-origin_id', 'x', 'origin_id'], // reads as originid, a context attribute
    ])('binary: %s=%j → 400 naming %s', async (header, value, field) => {
      const headers = binary()
      if (value === undefined) delete headers[header]
      else headers[header] = value
      const res = await post(headers, '{"cpu":1}')
      expect(res.status).toBe(400)
      expect(await read(res)).toEqual({ error: expect.any(String), field })
      expect(env.handled).toEqual([])
    })

    it.each([
      ['id', ''],
      ['id', undefined],
      ['source', ''],
      ['type', undefined],
      ['specversion', undefined],
      ['specversion', '2.0'],
      ['subject', ''],
      ['subject', undefined],
      ['Sub_Ject', 'x'], // reads as subject
    ])('structured: %s=%j → 400 naming it', async (field, value) => {
      const event = structured({ [field]: value })
      if (value === undefined) delete event[field]
      const res = await post(
        { 'content-type': 'application/cloudevents+json' },
        JSON.stringify(event),
      )
      expect(res.status).toBe(400)
      expect(await read(res)).toEqual({ error: expect.any(String), field })
    })

    it('broken JSON → 400 (data in binary mode, body in structured mode)', async () => {
      const b = await post(binary(), '{"cpu":')
      expect(b.status).toBe(400)
      expect((await read(b)).field).toBe('data')
      const s = await post({ 'content-type': 'application/cloudevents+json' }, '{"id":')
      expect(s.status).toBe(400)
      expect((await read(s)).field).toBe('body')
    })

    it('a batch with one invalid event → 400 naming it, nothing handled', async () => {
      const res = await post(
        { 'content-type': 'application/cloudevents-batch+json' },
        JSON.stringify([structured({ id: 'a' }), structured({ id: 'b', type: '' })]),
      )
      expect(res.status).toBe(400)
      expect((await read(res)).field).toBe('[1].type')
      expect(env.handled).toEqual([])
    })

    it.each(['text/plain', 'application/xml', 'application/cloudevents+avro'])(
      'content type %s without ce- headers → 415',
      async (contentType) => {
        const res = await post({ 'content-type': contentType }, JSON.stringify(structured()))
        expect(res.status).toBe(415)
        expect((await read(res)).field).toBe('content-type')
      },
    )

    it('a body over maxBodySize → 413 (declared length)', async () => {
      const res = await post(binary(), JSON.stringify({ cpu: 1, pad: 'x'.repeat(2000) }))
      expect(res.status).toBe(413)
      expect((await read(res)).field).toBe('body')
      expect(env.handled).toEqual([])
    })

    it('a streamed body over maxBodySize → 413 (bytes counted, no content-length)', async () => {
      const chunk = new TextEncoder().encode('x'.repeat(300))
      let n = 0
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (n++ < 10) controller.enqueue(chunk)
          else controller.close()
        },
      })
      const res = await env.send('/', {
        method: 'POST',
        headers: binary(),
        body,
        duplex: 'half',
      } as RequestInit)
      expect(res.status).toBe(413)
      expect(env.handled).toEqual([])
    })
  })

  it('GET /subjects/:name returns the stored subject, 404 when unknown', async () => {
    await post(binary(), '{"cpu":7}')
    await env.container.subject('device:1').setExt('region', 'eu')
    const res = await env.send('/subjects/device:1')
    expect(res.status).toBe(200)
    expect(await read(res)).toEqual({ name: 'device:1', props: { cpu: 7 }, ext: { region: 'eu' } })
    const missing = await env.send('/subjects/nope')
    expect(missing.status).toBe(404)
    expect((await read(missing)).field).toBe('name')
  })

  it('/healthz, /readyz and /metrics', async () => {
    await post(binary(), '{"cpu":7}')
    await post(binary({}, 'e-2'), '{')
    expect((await env.send('/healthz')).status).toBe(200)
    const ready = await env.send('/readyz')
    expect(ready.status).toBe(200)
    const metrics = await env.send('/metrics')
    expect(metrics.headers.get('content-type')).toMatch(/^text\/plain; version=0.0.4/)
    const text = await metrics.text()
    expect(text).toMatch(/^substate_handler_processed_total\{handler="handler#1"\} 1$/m)
    expect(text).toMatch(/^substate_http_responses_total\{code="202"\} 1$/m)
    expect(text).toMatch(/^substate_http_responses_total\{code="400"\} 1$/m)
    expect(text).toMatch(/^substate_http_events_total\{outcome="handled"\} 1$/m)
    expect(text).toMatch(/^# TYPE substate_handler_duration_seconds histogram$/m)
    expect(text).toMatch(
      /^substate_handler_duration_seconds_bucket\{handler="handler#1",le="\+Inf"\} 1$/m,
    )
    expect(text).toMatch(/^substate_unit_duration_seconds_count 1$/m)
  })

  it('answers 503 (and /readyz 503) while draining; in-flight events finish and are stored', async () => {
    let release!: () => void
    const gate = new Promise<void>((r) => {
      release = r
    })
    let started!: () => void
    const running = new Promise<void>((r) => {
      started = r
    })
    env.container.on('device.slow', async (ctx) => {
      started()
      await gate
      await ctx.subject.set('done', true)
    })
    const inflight = post(binary({ 'ce-type': 'device.slow' }, 'slow'), '{}')
    await running // in flight (a condition, not a sleep: the machine may be busy)
    const closing = env.container.close({ drainTimeout: 5000 })
    const during = await post(binary({}, 'late'), '{"cpu":1}')
    expect(during.status).toBe(503)
    expect(during.headers.get('retry-after')).toBe('1')
    expect((await env.send('/readyz')).status).toBe(503)
    expect((await env.send('/healthz')).status).toBe(200)
    release()
    expect((await inflight).status).toBe(202)
    await closing
    expect(env.handled).toEqual([])
  })
})
