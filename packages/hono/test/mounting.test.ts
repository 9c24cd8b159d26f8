import { createContainer, createMemoryStorage } from '@substate/core'
import { createReceiver } from '@substate/hono'
import { Hono } from 'hono'
import { expect, it } from 'vitest'
import { binary, listen } from './_support.js'

it.each(['app.request', 'socket'] as const)(
  'mounted under a prefix behind middleware that already read the body (%s)',
  async (transport) => {
    const storage = createMemoryStorage()
    const container = createContainer({ storage })
    container.on('device.reading', async (ctx) => {
      await ctx.subject.set('cpu', (ctx.payload as { cpu: number }).cpu)
    })
    const seen: string[] = []
    const app = new Hono()
    app.use('/substate/*', async (c, next) => {
      if (c.req.method === 'POST') seen.push(await c.req.text())
      await next()
    })
    app.route('/substate', createReceiver(container, { maxBodySize: 64 }))
    const server = transport === 'socket' ? await listen(app.fetch) : undefined
    const send = (path: string, init?: RequestInit): Promise<Response> =>
      server ? fetch(server.url + path, init) : Promise.resolve(app.request(path, init))
    try {
      const res = await send('/substate', {
        method: 'POST',
        headers: binary(),
        body: '{"cpu":3}',
      })
      expect(res.status).toBe(202)
      expect(seen).toEqual(['{"cpu":3}'])
      expect((await storage.load('device:1')).props).toEqual({ cpu: 3 })
      const big = await send('/substate', {
        method: 'POST',
        headers: binary({}, 'e-2'),
        body: JSON.stringify({ cpu: 1, pad: 'x'.repeat(100) }),
      })
      expect(big.status).toBe(413)
      expect((await send('/substate/subjects/device:1')).status).toBe(200)
    } finally {
      await server?.close()
      await container.close()
    }
  },
)
