import { describe, expect, it } from 'vitest'
import { createContainer, DEFAULT_BUCKETS, type DeadLetter } from '../src/index.js'
import { Histogram } from '../src/metrics.js'

describe('Histogram', () => {
  it('counts each observation in the first bucket whose bound is >= it, cumulatively', () => {
    const h = new Histogram()
    for (const s of [0.001, 0.005, 0.006, 0.3, 2, 42]) h.observe(s)
    const snap = h.snapshot()
    expect(snap.buckets).toEqual(DEFAULT_BUCKETS)
    const at = (le: number) => snap.counts[DEFAULT_BUCKETS.indexOf(le)]
    expect(at(0.005)).toBe(2) // 0.001 and 0.005 (le is inclusive)
    expect(at(0.01)).toBe(3)
    expect(at(0.25)).toBe(3)
    expect(at(0.5)).toBe(4)
    expect(at(2.5)).toBe(5)
    expect(at(10)).toBe(5) // 42 s is only in +Inf
    expect(snap.count).toBe(6)
    expect(snap.sum).toBeCloseTo(44.312, 6)
  })
})

describe('container metrics', () => {
  it('labels handlers by name or function name; a repeated name is suffixed #2, #3 in registration order', async () => {
    const c = createContainer()
    c.on('a', async function audit() {})
    c.on('a', async function audit() {})
    c.on('a', { name: 'audit' }, async () => {})
    c.on('a', { name: 'billing' }, async () => {})
    await c.emit('a', 's')
    expect(Object.keys(c.metrics.snapshot()).sort()).toEqual([
      'audit',
      'audit#2',
      'audit#3',
      'billing',
    ])
    for (const m of Object.values(c.metrics.snapshot())) {
      expect(m.processed).toBe(1)
      expect(m.duration.count).toBe(1)
    }
    await c.close()
  })

  it('counts events, failures, retries and dead letters, and times units and commits', async () => {
    const dead: DeadLetter[] = []
    const c = createContainer({
      deadLetter: { durable: false, put: async (d) => void dead.push(d) },
    })
    c.onError(() => {})
    c.on('device.reading', async (ctx) => {
      await ctx.subject.set('last', ctx.payload as number)
    })
    c.on(
      'device.reading',
      { name: 'flaky', retry: { attempts: 3, backoff: { initial: 1, max: 1 } } },
      async () => {
        throw new Error('down')
      },
    )
    await c.emit('device.reading', 'dev:1', 1)
    await c.receive({ id: '1', source: 't', type: 'other', subject: 'dev:2' })
    const all = await c.metrics.collect()
    // device.reading, its property change, and the received event
    expect(all.events).toBe(3)
    expect(all.failures).toBe(1)
    expect(all.retries).toBe(2)
    expect(all.deadLetters).toBe(1)
    expect(dead).toHaveLength(1)
    expect(all.handlers.flaky).toMatchObject({ processed: 1, failed: 1, retried: 2 })
    expect(all.handlers.flaky!.duration.count).toBe(3)
    expect(all.unitDuration.count).toBe(1)
    expect(all.conflicts).toBe(0)
    expect(all.outboxBacklog).toBe(0)
    await c.close()
  })

  it('renders Prometheus text: histograms as _bucket/_sum/_count in seconds, stable labels', async () => {
    const c = createContainer()
    c.on('x', async function slowish() {})
    c.on('x', { name: 'we"ird\\name' }, async () => {})
    await c.receive({ id: '1', source: 't', type: 'x', subject: 's' })
    const text = await c.metrics.prometheus()
    expect(text).toContain('# TYPE substate_handler_duration_seconds histogram')
    expect(text).toMatch(
      /^substate_handler_duration_seconds_bucket\{handler="slowish",le="0\.005"\} 1$/m,
    )
    expect(text).toMatch(
      /^substate_handler_duration_seconds_bucket\{handler="slowish",le="\+Inf"\} 1$/m,
    )
    expect(text).toMatch(/^substate_handler_duration_seconds_count\{handler="slowish"\} 1$/m)
    expect(text).toMatch(/^substate_handler_duration_seconds_sum\{handler="slowish"\} [0-9.e-]+$/m)
    expect(text).toContain('{handler="we\\"ird\\\\name"}')
    expect(text).toMatch(/^substate_unit_duration_seconds_count 1$/m)
    expect(text).toMatch(/^substate_events_total 1$/m)
    expect(text).toMatch(/^substate_outbox_backlog 0$/m)
    for (const name of [
      'substate_commit_duration_seconds',
      'substate_send_duration_seconds',
      'substate_failures_total',
      'substate_retries_total',
      'substate_dead_letters_total',
      'substate_unit_conflicts_total',
    ])
      expect(text).toContain(`# TYPE ${name} `)
    // Every sample line is `name{labels} value`.
    for (const line of text.trim().split('\n'))
      if (!line.startsWith('#')) expect(line).toMatch(/^[a-z_]+(\{.*\})? [0-9.e+-]+$/)
    await c.close()
  })
})
