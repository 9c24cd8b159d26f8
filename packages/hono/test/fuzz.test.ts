import { createContainer } from '@substate/core'
import { createReceiver } from '@substate/hono'
import fc from 'fast-check'
import { expect, it } from 'vitest'
import { binary, listen, structured } from './_support.js'

const MAX = 4096

// Header values the Fetch API accepts: printable ASCII, some spaces, and escapes.
const headerValue = fc.oneof(
  fc.constant(''),
  fc.stringMatching(/^[\x21-\x7e]{1,30}$/),
  fc.constantFrom(
    '1.0',
    '0.3',
    'device:1',
    'fail.me',
    'device.reading',
    '%zz',
    '%20x',
    '2025-01-01T00:00:00Z',
  ),
)
const headerName = fc.stringMatching(/^[a-z0-9_-]{1,12}$/)

const contentType = fc.oneof(
  fc.constantFrom(
    'application/json',
    'application/json; charset=utf-8',
    'Application/CloudEvents+JSON',
    'application/cloudevents+json',
    'application/cloudevents-batch+json',
    'application/cloudevents+xml',
    'text/plain',
    'application/octet-stream',
    'multipart/form-data; boundary=x',
    '',
  ),
  fc.stringMatching(/^[\x21-\x7e]{1,20}$/),
)

const attribute = fc.oneof(
  fc.constantFrom('1.0', 'device:1', 'fail.me', 'device.reading', 'x', ''),
  fc.string(),
  fc.integer(),
  fc.constant(null),
  fc.boolean(),
  fc.jsonValue({ maxDepth: 2 }),
)
// Structured events: valid ones with random attributes replaced, added or removed.
const event = fc
  .tuple(
    fc.dictionary(
      fc.oneof(
        fc.constantFrom(
          'id',
          'source',
          'type',
          'subject',
          'specversion',
          'time',
          'data',
          'data_base64',
          'datacontenttype',
        ),
        fc.string({ maxLength: 10 }),
      ),
      attribute,
      { maxKeys: 4 },
    ),
    fc.array(fc.constantFrom('id', 'source', 'type', 'subject', 'specversion'), { maxLength: 2 }),
    fc.string({ maxLength: 6 }),
  )
  .map(([patch, drop, id]) => {
    const e: Record<string, unknown> = { ...structured({ id: `f-${id}` }), ...patch }
    for (const k of drop) delete e[k]
    return e
  })

const body = fc.oneof(
  event.map((e) => JSON.stringify(e)),
  fc.array(event, { maxLength: 4 }).map((l) => JSON.stringify(l)),
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
  fc.string({ maxLength: 200 }),
  fc.uint8Array({ maxLength: 200 }),
  fc.constant('x'.repeat(MAX + 1)),
  fc.constant(''),
)

const headers = fc
  .tuple(
    fc.boolean(),
    fc.dictionary(
      fc.constantFrom(
        'ce-id',
        'ce-source',
        'ce-type',
        'ce-subject',
        'ce-specversion',
        'ce-time',
        'ce-originid',
      ),
      headerValue,
      { maxKeys: 3 },
    ),
    fc.dictionary(
      headerName.map((n) => `ce-${n}`),
      headerValue,
      { maxKeys: 2 },
    ),
    fc.option(contentType, { nil: undefined }),
    fc.array(fc.constantFrom('ce-id', 'ce-source', 'ce-type', 'ce-subject', 'ce-specversion'), {
      maxLength: 2,
    }),
    fc.string({ maxLength: 6 }),
  )
  .map(([isBinary, patch, extra, type, drop, id]) => {
    const h: Record<string, string> = isBinary
      ? { ...binary({}, `h-${encodeURIComponent(id)}`), ...patch, ...extra }
      : { ...extra }
    for (const k of drop) delete h[k]
    if (type === undefined) delete h['content-type']
    else h['content-type'] = type
    return h
  })

const request = fc.record({ headers, body })

function setup() {
  const container = createContainer()
  let failures = 0
  container.onError(() => {
    failures++
  })
  container.on('**', async (ctx) => {
    if (ctx.type === 'fail.me') throw new Error('asked to fail')
    await ctx.subject.set('seen', true)
  })
  return {
    container,
    app: createReceiver(container, { maxBodySize: MAX, onError: () => {} }),
    failures: () => failures,
  }
}

async function check(res: Response, failedBefore: number, failedAfter: number): Promise<void> {
  expect([202, 400, 413, 415, 500]).toContain(res.status)
  // ≥ 500 only when a handler failed on this request
  if (res.status >= 500) expect(failedAfter).toBeGreaterThan(failedBefore)
  const json = (await res.json()) as { error?: unknown; field?: unknown }
  if (res.status === 400 || res.status === 413 || res.status === 415) {
    expect(typeof json.error).toBe('string')
    expect(typeof json.field).toBe('string')
  }
  if (res.status === 415) expect(json.field).toBe('content-type')
}

it('10,000 generated requests: no 5xx unless a handler failed, and the receiver keeps working', async () => {
  const { container, app, failures } = setup()
  const statuses = new Map<number, number>()
  await fc.assert(
    fc.asyncProperty(request, async ({ headers, body }) => {
      const before = failures()
      const res = await app.request('/', { method: 'POST', headers, body })
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1)
      await check(res, before, failures())
    }),
    {
      numRuns: 10_000,
      // One request of each outcome among the generated ones, so the coverage check below does
      // not depend on the random draw (a failing handler behind valid binary headers is rare).
      examples: [
        [{ headers: binary({ 'ce-type': 'fail.me' }, 'example-500'), body: '{}' }],
        [{ headers: binary({}, 'example-202'), body: '{}' }],
        [{ headers: binary({ 'ce-id': '' }, 'example-400'), body: '{}' }],
        [{ headers: { 'content-type': 'text/plain' }, body: 'x' }],
        [{ headers: binary({}, 'example-413'), body: 'x'.repeat(MAX + 1) }],
      ],
    },
  )
  // every outcome was exercised
  expect([...statuses.keys()].sort()).toEqual([202, 400, 413, 415, 500])
  const ok = await app.request('/', {
    method: 'POST',
    headers: binary({}, 'after-fuzz'),
    body: '{}',
  })
  expect(ok.status).toBe(202)
  await container.close()
}, 120_000)

it('generated requests over a real socket: the server stays up', async () => {
  const { container, app, failures } = setup()
  const server = await listen(app.fetch)
  try {
    await fc.assert(
      fc.asyncProperty(request, async ({ headers, body }) => {
        const before = failures()
        const res = await fetch(`${server.url}/`, { method: 'POST', headers, body })
        await check(res, before, failures())
      }),
      { numRuns: 300 },
    )
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200)
  } finally {
    await server.close()
    await container.close()
  }
}, 60_000)
