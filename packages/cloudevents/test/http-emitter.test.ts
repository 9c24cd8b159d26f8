import { httpEmitter, parseHttpMessage } from '@substate/cloudevents'
import { createContainer, isSubstateError } from '@substate/core'
import { describe, expect, it } from 'vitest'

interface Call {
  readonly url: string
  readonly headers: Record<string, string>
  readonly body: string
}

/** A fake fetch answering from a script: a status, an Error to throw, or 'hang' (until aborted). */
function fakeFetch(script: Array<number | Error | 'hang'>): { fetch: typeof fetch; calls: Call[] } {
  const calls: Call[] = []
  const fake = (async (url: string, init: RequestInit): Promise<Response> => {
    calls.push({
      url: String(url),
      headers: init.headers as Record<string, string>,
      body: String(init.body),
    })
    const step = script.shift() ?? 202
    if (step === 'hang')
      return new Promise((_, reject) =>
        init.signal?.addEventListener('abort', () => reject(init.signal!.reason)),
      )
    if (step instanceof Error) throw step
    return new Response(step >= 400 ? JSON.stringify({ error: 'nope', field: 'id' }) : null, {
      status: step,
    })
  }) as typeof fetch
  return { fetch: fake, calls }
}

const fast = { initial: 1, factor: 1, max: 1 }

async function sendOne(emitter: ReturnType<typeof httpEmitter>): Promise<void> {
  const container = createContainer({ source: 'a' })
  const subject = container.subject('device:1')
  await subject.setExt('region', 'eu')
  await emitter.send(
    {
      id: 'e-1',
      type: 'device.alert',
      source: 'a',
      subject: 'device:1',
      time: 0,
      payload: { level: 3 },
      originId: 'o-1',
      extra: undefined,
    },
    subject,
  )
}

describe('httpEmitter', () => {
  it('POSTs a binary-mode CloudEvent with ext properties and originid', async () => {
    const { fetch, calls } = fakeFetch([202])
    await sendOne(
      httpEmitter({ url: 'http://127.0.0.1:1/in', fetch, headers: { authorization: 'x' } }),
    )
    expect(calls).toHaveLength(1)
    const [call] = calls
    expect(call!.url).toBe('http://127.0.0.1:1/in')
    expect(call!.headers).toMatchObject({
      authorization: 'x',
      'content-type': 'application/json',
      'ce-specversion': '1.0',
      'ce-id': 'e-1',
      'ce-originid': 'o-1',
      'ce-region': 'eu',
      'ce-time': '1970-01-01T00:00:00.000Z',
    })
    expect(JSON.parse(call!.body)).toEqual({ level: 3 })
  })

  it('sends headers from the emitter and an interceptor, the CloudEvents ones winning whatever their case', async () => {
    const { fetch, calls } = fakeFetch([202])
    const container = createContainer({ source: 'a' })
    container.route(
      'device.alert',
      httpEmitter({
        url: 'http://127.0.0.1:1/in',
        fetch,
        headers: { 'Content-Type': 'text/plain', Authorization: 'static' },
      }),
      {
        policy: 'direct',
        intercept: (envelope, next) => {
          envelope.headers['X-Request-Id'] = 'r-1'
          envelope.headers.AUTHORIZATION = 'per-request'
          return next()
        },
      },
    )
    expect((await container.emit('device.alert', 'device:1', { level: 1 })).ok).toBe(true)
    const headers = calls[0]!.headers
    expect(headers['content-type']).toBe('application/json')
    expect(headers.authorization).toBe('per-request')
    expect(headers['x-request-id']).toBe('r-1')
    expect(Object.keys(headers).filter((k) => k.toLowerCase() === 'content-type')).toEqual([
      'content-type',
    ])
    await container.close()
  })

  it('POSTs a structured-mode CloudEvent', async () => {
    const { fetch, calls } = fakeFetch([202])
    await sendOne(httpEmitter({ url: 'http://127.0.0.1:1/', mode: 'structured', fetch }))
    expect(calls[0]!.headers['content-type']).toMatch(/^application\/cloudevents\+json/)
    const parsed = parseHttpMessage(calls[0]!)
    expect(parsed).toMatchObject({
      ok: true,
      events: [{ id: 'e-1', originId: 'o-1', extensions: { region: 'eu' } }],
    })
  })

  it('retries 5xx, 429 and network errors with backoff, then succeeds', async () => {
    const { fetch, calls } = fakeFetch([503, new TypeError('fetch failed'), 429, 202])
    await sendOne(httpEmitter({ url: 'http://127.0.0.1:1/', fetch, retries: 3, backoff: fast }))
    expect(calls).toHaveLength(4)
    expect(new Set(calls.map((c) => c.body)).size).toBe(1)
  })

  it('does not retry a 4xx and rejects with the status and the answer', async () => {
    const { fetch, calls } = fakeFetch([400, 202])
    await expect(
      sendOne(httpEmitter({ url: 'http://127.0.0.1:1/', fetch, backoff: fast })),
    ).rejects.toThrow(/answered 400.*not retried.*"field":"id"/)
    expect(calls).toHaveLength(1)
  })

  it('rejects once retries are exhausted, saying where it tried', async () => {
    const { fetch, calls } = fakeFetch([500, 500, 500])
    await expect(
      sendOne(httpEmitter({ url: 'http://127.0.0.1:1/', fetch, retries: 2, backoff: fast })),
    ).rejects.toThrow(
      /POST http:\/\/127.0.0.1:1\/ of device.alert e-1 .*answered 500 .*after 3 attempt/,
    )
    expect(calls).toHaveLength(3)
    const net = fakeFetch([new TypeError('fetch failed')])
    await expect(
      sendOne(httpEmitter({ url: 'http://127.0.0.1:1/', fetch: net.fetch, retries: 0 })),
    ).rejects.toThrow(/fetch failed \(is the receiver up/)
  })

  it('times out a hanging attempt and retries it', async () => {
    const { fetch, calls } = fakeFetch(['hang', 'hang'])
    const err = await sendOne(
      httpEmitter({ url: 'http://127.0.0.1:1/', fetch, timeout: 20, retries: 1, backoff: fast }),
    ).catch((e: unknown) => e)
    expect(isSubstateError(err, 'TIMEOUT')).toBe(true)
    expect(calls).toHaveLength(2)
  })

  it('close() ends a backoff and later sends reject with ShutdownError', async () => {
    const { fetch } = fakeFetch([503, 503])
    const emitter = httpEmitter({
      url: 'http://127.0.0.1:1/',
      fetch,
      backoff: { initial: 60_000 },
    })
    const pending = sendOne(emitter).catch((e: unknown) => e)
    await new Promise((r) => setTimeout(r, 20))
    const started = Date.now()
    await emitter.close?.()
    expect(isSubstateError(await pending, 'SHUTDOWN')).toBe(true)
    expect(Date.now() - started).toBeLessThan(1000)
    expect(isSubstateError(await sendOne(emitter).catch((e: unknown) => e), 'SHUTDOWN')).toBe(true)
  })

  it('a failed delivery is a route:<name> failure the emitter of the event sees', async () => {
    const { fetch } = fakeFetch([500])
    const container = createContainer({ source: 'a' })
    container.onError(() => {})
    container.route(
      'alerts.*',
      httpEmitter({ url: 'http://127.0.0.1:1/', fetch, retries: 0, name: 'remote' }),
      {
        policy: 'direct',
      },
    )
    const result = await container.emit('alerts.high', 'device:1', { level: 3 })
    expect(result.ok).toBe(false)
    expect(result.failures.map((f) => f.handler)).toEqual(['route:remote'])
  })

  it('serves emit(..., { dispatchUrl }) through the container targets', async () => {
    const { fetch, calls } = fakeFetch([202])
    const container = createContainer({
      source: 'a',
      targets: { dispatchUrl: (url) => httpEmitter({ url, fetch }) },
    })
    let local = 0
    container.on('device.reboot', () => {
      local++
    })
    const result = await container.emit(
      'device.reboot',
      'device:1',
      {},
      {
        dispatchUrl: 'http://127.0.0.1:1/x',
      },
    )
    expect(result.ok).toBe(true)
    expect(calls.map((c) => c.url)).toEqual(['http://127.0.0.1:1/x'])
    expect(local).toBe(0)
  })
})
