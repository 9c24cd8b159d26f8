import {
  createContainer,
  createMemoryStorage,
  type EventContext,
  isSubstateError,
} from '@substate/core'
import { expect, it } from 'vitest'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

it('fires a durable timer once, as a unit of work, then forgets it', async () => {
  const storage = createMemoryStorage()
  const c = createContainer({ storage, timers: { poll: 1000 } })
  const fired: EventContext[] = []
  c.on('device.check', async (ctx) => {
    fired.push(ctx)
    await ctx.subject.set('checked', true) // cached: stored by the timer's unit
  })
  const started = Date.now()
  const timer = await c.subject('device:1').schedule('device.check', { in: 60 }, { why: 'silence' })
  expect(timer.at).toBeGreaterThanOrEqual(started + 60)
  // Stored before it resolves: another replica (or this one after a restart) would see it.
  expect(Object.keys((await storage.load('substate:timers')).props)).toEqual([`t:${timer.id}`])
  await sleep(250) // well before the 1 s poll: a timer due sooner wakes the poller
  expect(fired.map((ctx) => [ctx.id, ctx.subject.name, ctx.payload])).toEqual([
    [`timer:${timer.id}`, 'device:1', { why: 'silence' }],
  ])
  expect(fired[0]!.event.time).toBe(timer.at)
  expect((await storage.load('device:1')).props).toEqual({ checked: true })
  expect((await storage.load('substate:timers')).props).toEqual({})
  expect(await timer.cancel()).toBe(false) // already fired
  await c.close()
})

it('cancels a timer before it is due', async () => {
  const c = createContainer({ timers: { poll: 20 } })
  let fired = 0
  c.on('t', () => {
    fired++
  })
  const timer = await c.subject('s').schedule('t', { at: new Date(Date.now() + 80) })
  expect(await timer.cancel()).toBe(true)
  await sleep(200)
  expect(fired).toBe(0)
  await c.close()
})

it('two replicas on one storage fire each timer once between them', async () => {
  const storage = createMemoryStorage()
  const replicas = [0, 1].map(() => createContainer({ storage, timers: { poll: 20 } }))
  const fired: string[][] = [[], []]
  replicas.forEach((c, i) => {
    c.on('tick', (ctx) => {
      fired[i]!.push(ctx.id)
    })
  })
  await replicas[1]!.start() // fires timers it did not schedule
  await Promise.all(
    Array.from({ length: 20 }, (_, k) =>
      replicas[0]!.subject(`s:${k}`).schedule('tick', { in: 30 + (k % 5) * 20 }),
    ),
  )
  await sleep(400)
  const all = fired.flat()
  expect(all).toHaveLength(20)
  expect(new Set(all).size).toBe(20)
  expect((await storage.load('substate:timers')).props).toEqual({})
  for (const c of replicas) await c.close()
})

it('fires a timer again after its lease when the handler failed; its failed unit stored nothing', async () => {
  const storage = createMemoryStorage()
  const c = createContainer({ storage, timers: { poll: 20, lease: 100 } })
  c.onError(() => {})
  let runs = 0
  c.on('retry.me', async (ctx) => {
    runs++
    await ctx.subject.set('n', (n = 0) => n + 1)
    if (runs === 1) throw new Error('first run fails')
  })
  await c.subject('r').schedule('retry.me', { in: 10 })
  await sleep(400)
  expect(runs).toBe(2)
  expect((await storage.load('r')).props).toEqual({ n: 1 })
  expect((await storage.load('substate:timers')).props).toEqual({})
  await c.close()
})

it('rejects timers it cannot keep', async () => {
  const c = createContainer()
  const s = c.subject('s')
  await expect(s.schedule('t', { in: -1 })).rejects.toThrow(/in must be/)
  await expect(s.schedule('t', { at: Number.NaN })).rejects.toThrow(/at must be/)
  await expect(s.schedule('', { in: 1 })).rejects.toThrow(/event type/)
  await expect(s.schedule('t', { in: 1 }, { f: () => 1 })).rejects.toThrow(TypeError)
  await c.close()
  const closed = await s.schedule('t', { in: 1 }).catch((e: unknown) => e)
  expect(isSubstateError(closed, 'SHUTDOWN')).toBe(true)
})

it('renews the claim while a slow handler runs: another replica does not fire it too', async () => {
  const storage = createMemoryStorage()
  const replicas = [0, 1].map(() => createContainer({ storage, timers: { poll: 20, lease: 90 } }))
  let runs = 0
  for (const c of replicas) {
    c.on('slow', async () => {
      runs++
      await sleep(300) // more than three leases
    })
    await c.start()
  }
  await replicas[0]!.subject('s').schedule('slow', { in: 10 })
  await sleep(600)
  expect(runs).toBe(1)
  expect((await storage.load('substate:timers')).props).toEqual({})
  for (const c of replicas) await c.close()
})

it('drops a timer whose handlers failed `attempts` times, and says so', async () => {
  const storage = createMemoryStorage()
  const c = createContainer({ storage, timers: { poll: 20, lease: 40, attempts: 2 } })
  const reported: string[] = []
  c.onError((f) => reported.push(String(f.error.cause ?? f.error.message)))
  let runs = 0
  c.on('doomed', () => {
    runs++
    throw new Error('always')
  })
  const timer = await c.subject('d').schedule('doomed', { in: 5 })
  await sleep(400)
  expect(runs).toBe(2)
  expect(reported.some((r) => r.includes(`timer ${timer.id} failed 2 times`))).toBe(true)
  expect((await storage.load('substate:timers')).props).toEqual({})
  await c.close()
})

it('close() keeps to its drain timeout while a timer handler runs', async () => {
  const c = createContainer({ timers: { poll: 20 } })
  c.on('stuck', () => new Promise(() => {})) // never settles, ignores ctx.signal
  await c.subject('s').schedule('stuck', { in: 5 })
  await sleep(80)
  const started = Date.now()
  const report = await c.close({ drainTimeout: 150 })
  expect(report.timedOut).toBe(true)
  expect(Date.now() - started).toBeLessThan(1_500)
})
