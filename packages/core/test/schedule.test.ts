import {
  createContainer,
  createMemoryStorage,
  type HandlerFailure,
  isSubstateError,
} from '@substate/core'
import { expect, it } from 'vitest'
import { nextTick } from '../src/cron.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
/** Polls `done` until it holds; a stalled machine gets 20 s before the test gives up. */
async function until(done: () => boolean | Promise<boolean>): Promise<void> {
  for (const end = Date.now() + 20_000; !(await done()); await sleep(10)) {
    if (Date.now() > end) throw new Error('gave up waiting')
  }
}
const utc = (y: number, mo: number, d: number, h = 0, mi = 0) => Date.UTC(y, mo - 1, d, h, mi)

it('computes ticks: every on multiples since the epoch, cron in UTC', () => {
  const every = nextTick({ every: 1000 })
  expect([every(0), every(1500), every(2000)]).toEqual([1000, 2000, 3000])

  const quarter = nextTick({ cron: '*/15 * * * *' })
  expect(quarter(utc(2026, 1, 1, 0, 7))).toBe(utc(2026, 1, 1, 0, 15))
  expect(quarter(utc(2026, 1, 1, 0, 15))).toBe(utc(2026, 1, 1, 0, 30)) // strictly after
  expect(quarter(utc(2026, 12, 31, 23, 59))).toBe(utc(2027, 1, 1, 0, 0))
  // 2026-11-21 is a Saturday: the next weekday 09:00 is Monday the 23rd.
  expect(nextTick({ cron: '0 9 * * 1-5' })(utc(2026, 11, 21, 12))).toBe(utc(2026, 11, 23, 9))
  expect(nextTick({ cron: '30 6 1,15 * *' })(utc(2026, 11, 2))).toBe(utc(2026, 11, 15, 6, 30))
  expect(nextTick({ cron: '0 0 29 2 *' })(utc(2026, 3, 1))).toBe(utc(2028, 2, 29))
  // Both day fields restricted: either matches, as in cron (the 13th, or any Friday).
  expect(nextTick({ cron: '0 0 13 * 5' })(utc(2026, 11, 22))).toBe(utc(2026, 11, 27))
  expect(nextTick({ cron: '0 0 * * 7' })(utc(2026, 11, 22, 1))).toBe(utc(2026, 11, 29)) // 7 = Sunday
  // A day field starting with * (here a step) is not a restriction: both must match (Vixie cron).
  // Odd days of month that are Mondays: 2026-11-23 is an odd Monday.
  expect(nextTick({ cron: '0 0 */2 * 1' })(utc(2026, 11, 17))).toBe(utc(2026, 11, 23))
  // 29 February eight years away (2100 is no leap year) is found, not an error.
  expect(nextTick({ cron: '0 0 29 2 *' })(utc(2096, 3, 1))).toBe(utc(2104, 2, 29))
})

it('waits for a tick more than 24.8 days away (past the longest Node timer), firing nothing early', async () => {
  const c = createContainer()
  let fired = 0
  c.on('yearly', () => {
    fired++
  })
  c.on('monthly', () => {
    fired++
  })
  c.schedule('yearly', { cron: '0 0 1 1 *' })
  c.schedule('monthly', { every: 40 * 86_400_000 })
  await sleep(150)
  expect(fired).toBe(0)
  await c.close()
})

it('reports a tick whose unit could not be stored', async () => {
  const storage = createMemoryStorage()
  const broken = {
    ...storage,
    commit: (...args: Parameters<typeof storage.commit>) =>
      args[0] === 'ticker' ? Promise.reject(new Error('disk full')) : storage.commit(...args),
    commitUnit: (u: Parameters<NonNullable<typeof storage.commitUnit>>[0]) =>
      u.entries.some((e) => e.subject === 'ticker')
        ? Promise.reject(new Error('disk full'))
        : storage.commitUnit!(u),
  }
  const c = createContainer({ storage: broken })
  const failures: HandlerFailure[] = []
  c.onError((f) => failures.push(f))
  c.on('t', async (ctx) => {
    await ctx.subject.set('n', 1)
  })
  const stop = c.schedule('t', { every: 30 }, undefined, { subject: 'ticker' })
  await sleep(100)
  stop()
  expect(failures.length).toBeGreaterThan(0)
  expect(failures[0]!.handler).toBe('schedule:t')
  expect(String((failures[0]!.error as Error).cause)).toContain('disk full')
  await c.close()
})

it('rejects schedules it cannot run, at the call', () => {
  const c = createContainer()
  expect(() => c.schedule('t', { every: 0 })).toThrow(/every must be/)
  expect(() => c.schedule('t', { cron: '* * *' })).toThrow(/five fields/)
  expect(() => c.schedule('t', { cron: '61 * * * *' })).toThrow(
    /invalid cron "61 \* \* \* \*": .*minute/i,
  )
  expect(() => c.schedule('t', { cron: '0 0 31 2 *' })).toThrow(/never matches/)
  expect(() => c.schedule('', { every: 10 })).toThrow(/event type/)
  expect(() => c.schedule('t', {} as never)).toThrow(/every: ms/)
})

it('two replicas on one storage handle each tick once between them, as units of work', async () => {
  // Which replica wins a tick is up to the scheduler of a busy machine (one may win them all):
  // the invariant is that each tick is handled, and stored, exactly once across the replicas.
  const storage = createMemoryStorage()
  const replicas = [createContainer({ storage }), createContainer({ storage })]
  const handled: string[][] = [[], []]
  const stops = replicas.map((c, i) => {
    c.on('tick', async (ctx) => {
      handled[i]!.push(ctx.id)
      await ctx.subject.set('count', (n = 0) => n + 1) // cached: stored by the tick's unit
    })
    return c.schedule('tick', { every: 40 }, undefined, { subject: 'ticker' })
  })
  // A tick's handler may run again when its unit conflicted with the other replica's (handlers
  // must be safe to re-run): what counts is each tick's effect, stored exactly once.
  const ticks = () => new Set(handled.flat())
  await until(() => ticks().size >= 5)
  for (const stop of stops) stop()
  // The ticks already claimed finish: each one's unit stores its count.
  await until(async () => {
    const { props } = await storage.load('ticker')
    return props.count === ticks().size
  })
  const all = [...ticks()]
  for (const id of all) expect(id).toMatch(/^tick@\d{4}-\d\d-\d\dT/)
  expect((await storage.load('ticker')).props).toEqual({ count: all.length })
  for (const c of replicas) await c.close()
})

it('stops when unsubscribed, and when the container closes', async () => {
  const c = createContainer()
  let a = 0
  let b = 0
  c.on('a', () => {
    a++
  })
  c.on('b', () => {
    b++
  })
  const stopA = c.schedule('a', { every: 20 })
  c.schedule('b', { every: 20 }, { n: 1 })
  await sleep(120)
  stopA()
  const seenA = a
  expect(seenA).toBeGreaterThan(0)
  await c.close()
  const seenB = b
  expect(seenB).toBeGreaterThan(0)
  await sleep(100)
  expect([a, b]).toEqual([seenA, seenB])
  expect(() => c.schedule('c', { every: 20 })).toThrow()
  try {
    c.schedule('c', { every: 20 })
  } catch (e) {
    expect(isSubstateError(e, 'SHUTDOWN')).toBe(true)
  }
})

it('reports a tick it could not claim, and keeps ticking', async () => {
  const storage = createMemoryStorage()
  let fail = true
  const flaky = {
    ...storage,
    commit: (...args: Parameters<typeof storage.commit>) =>
      fail ? Promise.reject(new Error('storage down')) : storage.commit(...args),
  }
  const c = createContainer({ storage: flaky })
  const failures: HandlerFailure[] = []
  c.onError((f) => failures.push(f))
  let ticks = 0
  c.on('t', () => {
    ticks++
  })
  c.schedule('t', { every: 20 })
  await sleep(70)
  expect(failures.length).toBeGreaterThan(0)
  expect(failures[0]!.handler).toBe('schedule:t')
  expect(ticks).toBe(0)
  fail = false
  await sleep(80)
  expect(ticks).toBeGreaterThan(0)
  await c.close()
})
