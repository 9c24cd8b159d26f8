import { createContainer } from '@substate/core'
import { createReceiver } from '@substate/hono'
import { afterEach, describe, expect, it } from 'vitest'
import { listen } from './_support.js'

/** Reads SSE messages from a response body: each `data:` line parsed as JSON. */
function messages(res: Response): { next(): Promise<unknown>; ended: Promise<void> } {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader()
  const queue: unknown[] = []
  const waiting: Array<(v: unknown) => void> = []
  let buffer = ''
  const ended = (async () => {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) return
      buffer += value
      let cut = buffer.indexOf('\n\n')
      while (cut >= 0) {
        const block = buffer.slice(0, cut)
        buffer = buffer.slice(cut + 2)
        const data = block
          .split('\n')
          .filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).trim())
          .join('\n')
        if (data !== '') {
          const msg = JSON.parse(data)
          const w = waiting.shift()
          if (w) w(msg)
          else queue.push(msg)
        }
        cut = buffer.indexOf('\n\n')
      }
    }
  })()
  return {
    next: () =>
      queue.length > 0 ? Promise.resolve(queue.shift()) : new Promise((r) => waiting.push(r)),
    ended,
  }
}

describe('GET /events', () => {
  let stop: (() => Promise<void>) | undefined
  afterEach(async () => {
    await stop?.()
    stop = undefined
  })

  it.each(['app.request', 'socket'] as const)(
    'streams matching events as CloudEvents through %s and ends when the container closes',
    async (transport) => {
      const container = createContainer({ source: 'svc' })
      const app = createReceiver(container)
      let res: Response
      if (transport === 'socket') {
        const server = await listen(app.fetch)
        stop = server.close
        res = await fetch(`${server.url}/events?type=device.*&subject=device:1`)
      } else res = await app.request('/events?type=device.*&subject=device:1')
      expect(res.status).toBe(200)
      expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/)
      const stream = messages(res)
      await new Promise((r) => setTimeout(r, 20))
      await container.emit('other.thing', 'device:1', {})
      await container.emit('device.alert', 'device:2', {})
      await container.emit('device.alert', 'device:1', { level: 3 })
      expect(await stream.next()).toMatchObject({
        specversion: '1.0',
        type: 'device.alert',
        subject: 'device:1',
        source: 'svc',
        data: { level: 3 },
        originid: expect.any(String),
      })
      await container.close()
      await stream.ended
    },
  )

  it('answers 503 once the container is closed', async () => {
    const container = createContainer()
    const app = createReceiver(container)
    await container.close()
    expect((await app.request('/events')).status).toBe(503)
  })
})
