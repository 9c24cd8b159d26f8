import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { httpEmitter } from '@substate/cloudevents'
import { createContainer, isSubstateError } from '@substate/core'
import { afterEach, describe, expect, it } from 'vitest'

interface Answer {
  readonly status: number
  readonly retryAfter?: string
}

/**
 * A real HTTP server on loopback answering from a script (then 202), recording when each request
 * arrived.
 */
async function receiver(
  script: Answer[],
): Promise<{ url: string; arrivals: number[]; server: Server }> {
  const arrivals: number[] = []
  const server = createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      arrivals.push(performance.now())
      const answer = script.shift() ?? { status: 202 }
      const headers: Record<string, string> = { 'content-type': 'application/json' }
      if (answer.retryAfter !== undefined) headers['retry-after'] = answer.retryAfter
      res.writeHead(answer.status, headers).end(JSON.stringify({ status: answer.status }))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return { url: `http://127.0.0.1:${port}/`, arrivals, server }
}

const servers: Server[] = []
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))))
})

async function send(emitter: ReturnType<typeof httpEmitter>): Promise<void> {
  const container = createContainer({ source: 'a' })
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
    container.subject('device:1'),
  )
}

// Without Retry-After, this backoff retries within a few ms: every wait measured below is the
// server's. Only lower bounds are asserted (a timer never fires early; a busy machine only delays).
const fast = { initial: 1, factor: 1, max: 1 }

describe('httpEmitter honours Retry-After', () => {
  it('waits the delay seconds a 503 asks for, over a real socket', async () => {
    const r = await receiver([{ status: 503, retryAfter: '1' }])
    servers.push(r.server)
    await send(httpEmitter({ url: r.url, backoff: fast }))
    expect(r.arrivals).toHaveLength(2)
    expect(r.arrivals[1]! - r.arrivals[0]!).toBeGreaterThanOrEqual(990)
  })

  it('waits until the HTTP date a 429 names', async () => {
    // an HTTP date has whole seconds: three seconds ahead is more than two from now, which leaves
    // a second for the first request to arrive however busy the machine is
    const at = new Date(Date.now() + 3_000).toUTCString()
    const r = await receiver([{ status: 429, retryAfter: at }])
    servers.push(r.server)
    await send(httpEmitter({ url: r.url, backoff: fast }))
    expect(r.arrivals).toHaveLength(2)
    expect(r.arrivals[1]! - r.arrivals[0]!).toBeGreaterThanOrEqual(1_000)
  })

  it('caps the wait at maxRetryAfter', async () => {
    const r = await receiver([{ status: 503, retryAfter: '3600' }])
    servers.push(r.server)
    await send(httpEmitter({ url: r.url, backoff: fast, maxRetryAfter: 300 }))
    expect(r.arrivals).toHaveLength(2)
    const gap = r.arrivals[1]! - r.arrivals[0]!
    expect(gap).toBeGreaterThanOrEqual(290)
    expect(gap).toBeLessThan(3_600_000)
  })

  it('uses the backoff when Retry-After is absent, invalid or in the past', async () => {
    const r = await receiver([
      { status: 503, retryAfter: 'soon' },
      { status: 503, retryAfter: new Date(Date.now() - 60_000).toUTCString() },
      { status: 503 },
    ])
    servers.push(r.server)
    // the bad values neither fail the send nor stall it: each retry follows the (fast) backoff
    await send(httpEmitter({ url: r.url, retries: 3, backoff: fast }))
    expect(r.arrivals).toHaveLength(4)
  })

  it('close() ends a Retry-After wait', async () => {
    const r = await receiver([{ status: 503, retryAfter: '3600' }])
    servers.push(r.server)
    const emitter = httpEmitter({ url: r.url, backoff: fast, maxRetryAfter: 3_600_000 })
    const pending = send(emitter).catch((e: unknown) => e)
    while (r.arrivals.length === 0) await new Promise((res) => setTimeout(res, 10))
    await emitter.close?.()
    expect(isSubstateError(await pending, 'SHUTDOWN')).toBe(true)
    expect(r.arrivals).toHaveLength(1)
  })

  it('rejects a negative maxRetryAfter', () => {
    expect(() => httpEmitter({ url: 'http://127.0.0.1:1/', maxRetryAfter: -1 })).toThrow(TypeError)
  })
})
