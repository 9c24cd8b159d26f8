import {
  type Container,
  createContainer,
  createMemoryStorage,
  type IncomingEvent,
} from '@substate/core'
import { createReceiver } from '@substate/hono'
import { expect, it } from 'vitest'
import { binary, listen } from './_support.js'

it('100 concurrent requests for 5 subjects: one at a time per subject in arrival order, subjects overlap', async () => {
  const storage = createMemoryStorage()
  const container = createContainer({ storage, concurrency: 16 })
  const arrived = new Map<string, string[]>()
  // Arrival order is the order the receiver hands events to the container.
  const spy = new Proxy(container, {
    get(target, key) {
      if (key === 'receive')
        return (e: IncomingEvent) => {
          const list = arrived.get(e.subject) ?? []
          list.push(e.id)
          arrived.set(e.subject, list)
          return target.receive(e)
        }
      const v = Reflect.get(target, key, target)
      return typeof v === 'function' ? v.bind(target) : v
    },
  }) as Container

  const handled = new Map<string, string[]>()
  const active = new Map<string, number>()
  let maxPerSubject = 0
  let running = 0
  let maxRunning = 0
  container.on('device.reading', async (ctx) => {
    const name = ctx.subject.name
    active.set(name, (active.get(name) ?? 0) + 1)
    maxPerSubject = Math.max(maxPerSubject, active.get(name)!)
    maxRunning = Math.max(maxRunning, ++running)
    await new Promise((r) => setTimeout(r, 1 + Math.random() * 4))
    await ctx.subject.set('last', ctx.id)
    const list = handled.get(name) ?? []
    list.push(ctx.id)
    handled.set(name, list)
    running--
    active.set(name, active.get(name)! - 1)
  })

  const server = await listen(createReceiver(spy).fetch)
  try {
    const responses = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        fetch(`${server.url}/`, {
          method: 'POST',
          headers: binary({}, `e-${i}`, `device:${i % 5}`),
          body: JSON.stringify({ seq: i }),
        }),
      ),
    )
    expect(responses.map((r) => r.status)).toEqual(Array(100).fill(202))
  } finally {
    await server.close()
  }

  expect(maxPerSubject).toBe(1)
  expect(maxRunning).toBeGreaterThan(1)
  expect([...handled.keys()].sort()).toEqual([
    'device:0',
    'device:1',
    'device:2',
    'device:3',
    'device:4',
  ])
  for (const [name, ids] of handled) {
    expect(ids).toHaveLength(20)
    expect(ids).toEqual(arrived.get(name))
    expect((await storage.load(name)).props).toEqual({ last: ids.at(-1) })
  }
  await container.close()
})
