import { createContainer, createMemoryStorage, type DeadLetter } from '@substate/core'
import { createReceiver } from '@substate/hono'
import { expect, it } from 'vitest'
import { binary } from './_support.js'

it.each([
  [true, 202],
  [false, 500],
])('a failed handler with a dead-letter sink (durable: %s) → %i', async (durable, status) => {
  const letters: DeadLetter[] = []
  const storage = createMemoryStorage()
  const container = createContainer({
    storage,
    deadLetter: { durable, put: async (entry) => void letters.push(entry) },
  })
  container.onError(() => {})
  container.on('device.reading', async (ctx) => {
    await ctx.subject.set('cpu', 1)
    throw new Error('boom')
  })
  const app = createReceiver(container, { onError: () => {} })
  const res = await app.request('/', { method: 'POST', headers: binary(), body: '{}' })
  expect(res.status).toBe(status)
  expect(letters.map((l) => l.event.id)).toEqual(['e-1'])
  await container.close()
})

it('GET /subjects/:name takes names with slashes and encoded characters', async () => {
  const container = createContainer()
  await container.subject('site/a b').set('x', 1)
  const app = createReceiver(container)
  expect(await (await app.request('/subjects/site/a%20b')).json()).toEqual({
    name: 'site/a b',
    props: { x: 1 },
    ext: {},
  })
  await container.close()
})
