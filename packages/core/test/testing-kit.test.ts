/**
 * The test kit's recorders with a real container and its in-memory storage: `runUnit` reports
 * what a unit stored, published and sent; `fakeEmitter` takes a unit's sends only once it
 * committed, fails on request, and sees the outbox send a failed delivery again (same id) once
 * its lease ran out on the fake clock; `recordEvents` waits for events. And the kit loads in
 * plain Node, without vitest.
 */
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { createContainer } from '@substate/core'
import { fakeClock, fakeEmitter, recordEvents, runUnit } from '@substate/core/testing'
import { describe, expect, it } from 'vitest'

const order = (id: string) => ({ id, source: 'shop', type: 'order.paid', subject: 'order:1' })

describe('runUnit', () => {
  it('reports what the unit stored, deleted, published and sent', async () => {
    const billing = fakeEmitter({ name: 'billing' })
    const container = createContainer()
    container.route('invoice.*', billing, { policy: 'direct' })
    container.on('order.paid', async (ctx) => {
      await ctx.subject.set('status', 'paying')
      await ctx.subject.set('status', 'paid')
      await ctx.subject.delete('draft')
      await container.subject('customer:7').set('orders', (n = 0) => n + 1)
      await ctx.emit('invoice.requested', { total: 12 }, { subject: 'invoice:1' })
    })
    await container.subject('order:1').set('draft', true)
    await container.subject('order:1').store()

    const unit = await runUnit(container, order('e-1'))
    expect(unit.status).toBe('handled')
    expect(unit.stored).toEqual({ 'order:1': { status: 'paid' }, 'customer:7': { orders: 1 } })
    expect(unit.deleted).toEqual({ 'order:1': ['draft'] })
    expect(unit.events.map((e) => e.type)).toEqual([
      'order.paid',
      'subject-property-changed',
      'subject-property-changed',
      'subject-property-deleted',
      'subject-property-changed',
      'invoice.requested',
    ])
    expect(unit.sent.map((m) => [m.emitter, m.event.type, m.subject, m.attempt])).toEqual([
      ['billing', 'invoice.requested', 'invoice:1', 1],
    ])
    expect(billing.sent).toEqual(unit.sent)
    // It was stored, not only cached.
    expect(await container.subject('order:1').get('status', { cache: false })).toBe('paid')
    // The same event again is a duplicate: nothing stored, published or sent.
    const again = await runUnit(container, order('e-1'))
    expect([again.status, again.events, again.sent, again.stored]).toEqual([
      'duplicate',
      [],
      [],
      {},
    ])
    await container.close()
    expect(billing.closed).toBe(true)
  })

  it('a failed unit stored, published and sent nothing', async () => {
    const billing = fakeEmitter({ name: 'billing' })
    const container = createContainer()
    container.onError(() => {})
    container.route('invoice.*', billing)
    container.on('order.paid', async (ctx) => {
      await ctx.subject.set('status', 'paid')
      await ctx.emit('invoice.requested', undefined, { subject: 'invoice:1' })
      throw new Error('ledger down')
    })
    const unit = await runUnit(container, { type: 'order.paid', subject: 'order:1' })
    expect(unit.status).toBe('failed')
    expect(unit.error?.message).toMatch(/ledger down|order.paid/)
    expect([unit.events, unit.sent, unit.stored]).toEqual([[], [], {}])
    expect([billing.sent, billing.failed]).toEqual([[], []])
    expect(await container.subject('order:1').get('status', { default: null })).toBe(null)
    await container.close()
  })

  it('captures sends to explicit targets (dispatchUrl, topic)', async () => {
    const outbound = fakeEmitter()
    const container = createContainer({ targets: outbound.targets })
    container.on('order.paid', async (ctx) => {
      await ctx.emit('invoice.requested', undefined, {
        subject: 'invoice:1',
        dispatchUrl: 'http://billing.internal/events',
      })
      await ctx.emit('order.audit', undefined, { topic: 'audit' })
    })
    const unit = await runUnit(container, { type: 'order.paid', subject: 'order:1' })
    expect(unit.sent.map((m) => [m.emitter, m.event.type])).toEqual([
      ['http://billing.internal/events', 'invoice.requested'],
      ['audit', 'order.audit'],
    ])
    expect(outbound.of('order.*').map((m) => m.emitter)).toEqual(['audit'])
    await container.close()
  })
})

describe('fakeEmitter', () => {
  it('fails the first delivery; the outbox sends it again, same id, once its lease ran out', async () => {
    const clock = fakeClock({ now: 0 })
    const billing = fakeEmitter({ name: 'billing', fail: 1 })
    const container = createContainer({ clock, outbox: { poll: 1_000, lease: 30_000 } })
    const failures: string[] = []
    container.onError((f) => failures.push(f.handler))
    container.route('invoice.*', billing)
    container.on('order.paid', (ctx) => ctx.emit('invoice.requested'))

    const unit = await runUnit(container, order('e-2'), { clock })
    expect(unit.status).toBe('handled') // the unit is stored; its send waits in the outbox
    expect(unit.sent).toEqual([])
    expect(billing.failed.map((m) => m.attempt)).toEqual([1])
    expect(failures).toEqual(['route:billing'])

    await clock.advance(29_000)
    expect(billing.sent).toEqual([]) // still leased to the failed delivery
    await clock.advance(2_000)
    expect(billing.sent.map((m) => [m.event.id, m.attempt])).toEqual([
      [billing.failed[0]!.event.id, 2],
    ])
    expect((await container.close()).outbox).toBe(0)
  })

  it('fails the deliveries a function picks', async () => {
    const emitter = fakeEmitter({ fail: (m) => m.event.subject === 'bad' })
    const container = createContainer()
    container.onError(() => {})
    container.route('*', emitter, { policy: 'direct' })
    await container.emit('ping', 'good')
    await container.emit('ping', 'bad')
    expect(emitter.types()).toEqual(['ping'])
    expect(emitter.failed.map((m) => m.subject)).toEqual(['bad'])
    emitter.clear()
    expect([emitter.sent, emitter.failed]).toEqual([[], []])
    await container.close()
  })
})

describe('recordEvents', () => {
  it('records events by glob and waits for one to come', async () => {
    const clock = fakeClock({ now: 0 })
    const container = createContainer({ clock })
    const recorder = recordEvents(container, ['device.*', 'alert'])
    container.on('device.reading', async (ctx) => {
      if ((ctx.payload as { cpu: number }).cpu > 90) await ctx.emit('alert')
    })
    await container.emit('device.reading', 'device:1', { cpu: 10 })
    await container.emit('other', 'device:1')
    expect(recorder.types()).toEqual(['device.reading'])

    const second = recorder.waitFor('device.*', { count: 2 })
    const alert = recorder.waitFor('alert', { where: (e) => e.subject === 'device:2' })
    await container.subject('device:2').schedule('device.reading', { in: 60_000 }, { cpu: 95 })
    await clock.advance(60_000)
    expect((await second).subject).toBe('device:2')
    expect((await alert).type).toBe('alert')
    expect(recorder.of('alert')).toHaveLength(1)
    recorder.clear()
    expect(recorder.events).toEqual([])

    const never = recorder.waitFor('never')
    await container.close()
    await expect(never).rejects.toThrow(/the container closed/)
  })

  it('stops recording when stopped or disposed, keeping what it recorded', async () => {
    const container = createContainer()
    const recorder = recordEvents(container)
    await container.emit('a', 'x:1')
    const pending = recorder.waitFor('b')
    recorder[Symbol.dispose]()
    await expect(pending).rejects.toThrow(/the recorder stopped/)
    await container.emit('b', 'x:1')
    expect(recorder.types()).toEqual(['a'])
    await expect(recorder.waitFor('b')).rejects.toThrow(/the recorder stopped/)
    await container.close()
  })
})

describe('@substate/core/testing without vitest', () => {
  const core = fileURLToPath(new URL('..', import.meta.url))
  const built = existsSync(`${core}/dist/testing/index.js`)

  it('loads in plain Node and drives a container, vitest never imported', () => {
    if (!built) throw new Error('packages/core/dist is missing: run `npx tsc -b` first')
    // A resolve hook that fails any import of vitest; VITEST unset, as under node:test.
    const hook = `export async function resolve(s, c, next) {
      if (s === 'vitest' || s.startsWith('vitest/')) throw new Error('vitest was imported')
      return next(s, c)
    }`
    const register = `import { register } from 'node:module'; register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hook)}`)})`
    const script = `
      import { createContainer } from '@substate/core'
      import { fakeClock, runUnit, describeStorage } from '@substate/core/testing'
      const clock = fakeClock({ now: 0 })
      const container = createContainer({ clock })
      let tries = 0
      container.onError(() => {})
      container.on('job', { retry: { attempts: 2, backoff: { initial: 60_000 } } }, () => {
        if (++tries < 2) throw new Error('once')
      })
      const unit = await runUnit(container, { type: 'job', subject: 'job:1' }, { clock })
      let suite
      try { describeStorage('x', { create: () => null }) } catch (e) { suite = e.message }
      console.log(JSON.stringify({ status: unit.status, tries, skipped: clock.now() > 0, suite }))
      await container.close()
    `
    const env = { ...process.env }
    delete env.VITEST
    const r = spawnSync(
      process.execPath,
      [
        '--import',
        `data:text/javascript,${encodeURIComponent(register)}`,
        '--input-type=module',
        '-e',
        script,
      ],
      { cwd: core, env, encoding: 'utf8' },
    )
    expect(r.stderr).toBe('')
    expect(JSON.parse(r.stdout)).toEqual({
      status: 'handled',
      tries: 2,
      skipped: true,
      suite: 'describeStorage() defines vitest suites: run the file with vitest',
    })
  })
})
