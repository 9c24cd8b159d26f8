/**
 * The fake clock on its own, and driving a real container: cron schedules (across both
 * daylight-saving changes), `every` schedules, durable timers, handler retries, handler timeouts,
 * batch waits and request timeouts, all at exact fake times and without waiting for real time
 * (the delays are hours: a test that waited for them would time out).
 */
import {
  createContainer,
  createMemoryStorage,
  type SubstateEvent,
  storageDeadLetters,
  systemClock,
} from '@substate/core'
import { fakeClock, recordEvents, runUnit } from '@substate/core/testing'
import { describe, expect, it, vi } from 'vitest'

const HOUR = 3_600_000
const iso = (ms: number) => new Date(ms).toISOString()

describe('fakeClock', () => {
  it('fires due timers in time order (then in the order set), each at its own time', async () => {
    const clock = fakeClock({ now: 1_000 })
    const fired: string[] = []
    clock.setTimeout(() => fired.push(`b@${clock.now()}`), 200)
    clock.setTimeout(() => fired.push(`a@${clock.now()}`), 100)
    clock.setTimeout(() => fired.push(`c@${clock.now()}`), 200)
    const cleared = clock.setTimeout(() => fired.push('cleared'), 50)
    clock.clearTimeout(cleared)
    expect([clock.pending, clock.nextAt()]).toEqual([3, 1_100])
    await clock.advance(150)
    expect(fired).toEqual(['a@1100'])
    expect(clock.now()).toBe(1_150)
    await clock.advance(50)
    expect(fired).toEqual(['a@1100', 'b@1200', 'c@1200'])
    expect(clock.pending).toBe(0)
  })

  it('lets the work a timer started settle, and fires the timers that work set within the advance', async () => {
    const clock = fakeClock({ now: 0 })
    const steps: number[] = []
    const wait = (ms: number) => new Promise<void>((r) => clock.setTimeout(r, ms))
    const job = (async () => {
      for (let i = 0; i < 3; i++) {
        await wait(10)
        await Promise.resolve() // more promise hops between the timers
        steps.push(clock.now())
      }
      return 'done'
    })()
    await clock.advance(25)
    expect(steps).toEqual([10, 20])
    await clock.advance(5)
    expect(steps).toEqual([10, 20, 30])
    expect(await job).toBe('done')
  })

  it('runUntil skips from timer to timer until the promise settles; next() moves to the next timer', async () => {
    const clock = fakeClock({ now: 0 })
    const wait = (ms: number) => new Promise<void>((r) => clock.setTimeout(r, ms))
    const result = await clock.runUntil(
      (async () => {
        await wait(HOUR)
        await wait(2 * HOUR)
        return clock.now()
      })(),
    )
    expect(result).toBe(3 * HOUR)
    await expect(
      clock.runUntil(wait(HOUR).then(() => Promise.reject(new Error('boom')))),
    ).rejects.toThrow('boom')
    clock.setTimeout(() => {}, 500)
    expect(await clock.next()).toBe(true)
    expect(clock.now()).toBe(4 * HOUR + 500)
    expect(await clock.next()).toBe(false)
  })

  it('refuses to go back, to move twice at once, and reports a throwing timer', async () => {
    const clock = fakeClock({ now: new Date('2026-01-01T00:00:00Z') })
    await expect(clock.advanceTo(new Date('2025-12-31T00:00:00Z'))).rejects.toThrow(
      /does not go back/,
    )
    await expect(clock.advance(-1)).rejects.toThrow(TypeError)
    const moving = clock.advance(10)
    await expect(clock.advance(10)).rejects.toThrow(/while the clock is moving/)
    await moving
    clock.setTimeout(() => {
      throw new Error('timer failed')
    }, 1)
    const after = clock.setTimeout(() => {}, 2)
    await expect(clock.advance(5)).rejects.toThrow('timer failed')
    expect(clock.pending).toBe(0) // the timers after it fired all the same
    clock.clearTimeout(after)
  })

  it('gives up on a timer loop that never lets time move, and on a promise no timer settles', async () => {
    const clock = fakeClock({ now: 0, loopLimit: 50 })
    let stop = false
    const loop = (): void => {
      if (!stop) clock.setTimeout(loop, 0)
    }
    loop()
    await expect(clock.flush()).rejects.toThrow(/fired 50 timers at 1970-01-01T00:00:00.000Z/)
    stop = true
    await clock.flush()
    const poll = (): void => void clock.setTimeout(poll, 1_000)
    poll()
    await expect(clock.runUntil(new Promise(() => {}), { limit: 20 })).rejects.toThrow(
      /runUntil\(\) fired 20 timers .* still pending/,
    )
    expect(clock.now()).toBe(20_000)
  })
})

it('the system clock reads the globals at each call (vi.useFakeTimers fakes it too)', () => {
  vi.useFakeTimers({ now: 5_000 })
  try {
    expect(systemClock.now()).toBe(5_000)
    let fired = false
    systemClock.setTimeout(() => {
      fired = true
    }, 10)
    vi.advanceTimersByTime(10)
    expect(fired).toBe(true)
  } finally {
    vi.useRealTimers()
  }
  expect(Math.abs(systemClock.now() - Date.now())).toBeLessThan(60_000)
})

describe('a container on a fake clock', () => {
  it('runs a cron schedule at its exact times across the spring-forward change (Europe/Rome)', async () => {
    const clock = fakeClock({ now: new Date('2026-03-28T12:00:00Z') })
    const container = createContainer({ clock })
    const ran: string[] = []
    container.on('backup.run', (ctx) => {
      ran.push(`${iso(ctx.event.time)} ${iso(clock.now())}`)
    })
    container.schedule('backup.run', { cron: '30 2 * * *', tz: 'Europe/Rome' })
    await clock.advanceTo(new Date('2026-03-30T12:00:00Z'))
    expect(ran).toEqual([
      // 02:30 does not exist on the 29th: it runs once, at the end of the gap (03:00 CEST).
      '2026-03-29T01:00:00.000Z 2026-03-29T01:00:00.000Z',
      '2026-03-30T00:30:00.000Z 2026-03-30T00:30:00.000Z', // 02:30 CEST
    ])
    await container.close()
  })

  it('runs a cron time that happens twice (fall back) once, at its first occurrence', async () => {
    const clock = fakeClock({ now: new Date('2026-10-24T12:00:00Z') })
    const container = createContainer({ clock })
    const recorder = recordEvents(container, 'backup.run')
    container.schedule('backup.run', { cron: '30 2 * * *', tz: 'Europe/Rome' })
    await clock.advance(48 * HOUR)
    expect(recorder.events.map((e) => iso(e.time))).toEqual([
      '2026-10-25T00:30:00.000Z', // 02:30 CEST, the first of the two 02:30s
      '2026-10-26T01:30:00.000Z', // 02:30 CET
    ])
    await container.close()
  })

  it('runs an every schedule on its multiples and stops it', async () => {
    const clock = fakeClock({ now: 10 * HOUR + 1 })
    const container = createContainer({ clock })
    const recorder = recordEvents(container, 'tick')
    const stop = container.schedule('tick', { every: HOUR })
    await clock.advance(3 * HOUR)
    stop()
    await clock.advance(3 * HOUR)
    expect(recorder.events.map((e) => e.time / HOUR)).toEqual([11, 12, 13])
    await container.close()
  })

  it('two replicas on one storage and one clock handle each tick and each timer once between them', async () => {
    const clock = fakeClock({ now: 0 })
    const storage = createMemoryStorage({ clock })
    const replicas = [createContainer({ clock, storage }), createContainer({ clock, storage })]
    const handled: string[] = []
    for (const [i, r] of replicas.entries()) {
      r.on('tick', (ctx) => {
        handled.push(`${i} tick ${ctx.event.time / HOUR}`)
      })
      r.on('device.check', () => {
        handled.push(`${i} check`)
      })
      r.schedule('tick', { every: HOUR })
      await r.start() // both poll the storage for due timers
    }
    await replicas[1]!.subject('device:1').schedule('device.check', { in: 90 * 60_000 })
    await clock.advance(3 * HOUR)
    const ticks = handled.filter((h) => h.includes('tick')).map((h) => h.slice(2))
    expect(ticks).toEqual(['tick 1', 'tick 2', 'tick 3'])
    expect(handled.filter((h) => h.endsWith('check'))).toHaveLength(1)
    for (const r of replicas) await r.close()
  })

  it('fires a durable timer when its time comes, not before', async () => {
    const clock = fakeClock({ now: new Date('2026-06-01T00:00:00Z') })
    const container = createContainer({ clock })
    container.on('device.check', async (ctx) => {
      await ctx.subject.set('checkedAt', clock.now())
    })
    const timer = await container.subject('device:1').schedule('device.check', { in: 2 * HOUR })
    expect(timer.at).toBe(clock.now() + 2 * HOUR)
    await clock.advance(2 * HOUR - 1)
    expect(await container.subject('device:1').get('checkedAt', { default: null })).toBe(null)
    await clock.advance(1)
    expect(await container.subject('device:1').get('checkedAt')).toBe(timer.at)
    await container.close()
  })

  it('retries a handler with its backoff, then dead-letters it, on fake time', async () => {
    const clock = fakeClock({ now: 0 })
    const storage = createMemoryStorage({ clock })
    const deadLetters = storageDeadLetters(storage)
    const container = createContainer({ clock, storage, deadLetter: deadLetters })
    container.onError(() => {})
    const tries: number[] = []
    const retry = { attempts: 3, backoff: { initial: HOUR, factor: 2, max: 10 * HOUR } }
    container.on('invoice.send', { name: 'mailer', retry }, () => {
      tries.push(clock.now())
      throw new Error('smtp down')
    })
    const unit = await runUnit(container, { type: 'invoice.send', subject: 'invoice:1' }, { clock })
    // Durably dead-lettered: the unit is handled (acknowledged), the failure kept.
    expect(unit.status).toBe('handled')
    expect(tries).toHaveLength(3)
    const gaps = [tries[1]! - tries[0]!, tries[2]! - tries[1]!]
    // Backoff of 1 h then 2 h, each with ±20 % jitter.
    expect(gaps[0]).toBeGreaterThanOrEqual(0.8 * HOUR)
    expect(gaps[0]).toBeLessThanOrEqual(1.2 * HOUR)
    expect(gaps[1]).toBeGreaterThanOrEqual(1.6 * HOUR)
    expect(gaps[1]).toBeLessThanOrEqual(2.4 * HOUR)
    const [entry] = await deadLetters.list()
    expect([entry?.handler, entry?.attempts, entry?.at]).toEqual(['mailer', 3, tries[2]])
    await container.close()
  })

  it('times a handler out on fake time', async () => {
    const clock = fakeClock({ now: 0 })
    const container = createContainer({ clock })
    container.onError(() => {})
    container.on('report.build', { name: 'builder', timeout: HOUR }, async (ctx) => {
      await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve))
    })
    const unit = await runUnit(container, { type: 'report.build', subject: 'report:1' }, { clock })
    expect(unit.status).toBe('failed')
    expect((unit.error?.cause as Error)?.name).toBe('TimeoutError')
    expect(clock.now()).toBe(HOUR)
    await container.close()
  })

  it('runs a batch when its wait is over', async () => {
    const clock = fakeClock({ now: 0 })
    const container = createContainer({ clock })
    const batches: number[][] = []
    container.on('reading', { batch: { size: 10, wait: HOUR } }, async (ctxs) => {
      batches.push(ctxs.map((c) => (c.payload as { cpu: number }).cpu))
    })
    const emits = [40, 90].map((cpu) => container.emit('reading', 'fleet', { cpu }))
    await clock.advance(HOUR - 1)
    expect(batches).toEqual([])
    await clock.advance(1)
    expect(batches).toEqual([[40, 90]])
    expect((await Promise.all(emits)).every((r) => r.ok)).toBe(true)
    await container.close()
  })

  it('times a request out on fake time, and stamps events with the fake time', async () => {
    const clock = fakeClock({ now: Date.UTC(2030, 0, 1) })
    const container = createContainer({ clock })
    const recorder = recordEvents(container)
    const reply = container.request('price.quote', 'sku:1', undefined, {
      reply: 'price.quoted',
      timeout: HOUR,
    })
    const failed = reply.catch((e: Error) => e.name)
    await clock.advance(HOUR)
    expect(await failed).toBe('TimeoutError')
    expect(recorder.events.map((e: SubstateEvent) => [e.type, e.time])).toEqual([
      ['price.quote', Date.UTC(2030, 0, 1)],
    ])
    await container.close()
  })
})
