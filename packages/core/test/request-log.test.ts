import { createContainer, isSubstateError } from '@substate/core'
import { describe, expect, it } from 'vitest'

describe('request/reply', () => {
  it('resolves with the reply of the same cascade', async () => {
    const c = createContainer()
    const { on } = c.handlers()
    on('price.quote', async (ctx) => {
      const { qty } = ctx.payload as { qty: number }
      await ctx.emit('price.quoted', { total: qty * 5 })
    })
    const [a, b] = await Promise.all([
      c.request('price.quote', 'sku:1', { qty: 3 }, { reply: 'price.quoted' }),
      c.request('price.quote', 'sku:2', { qty: 4 }, { reply: 'price.quoted' }),
    ])
    expect(a.payload).toEqual({ total: 15 })
    expect(b.payload).toEqual({ total: 20 })
    expect(a.subject).toBe('sku:1')
  })

  it('takes a reply that arrives later, from outside, carrying the origin id', async () => {
    const c = createContainer()
    let originId = ''
    c.handlers().on('job.start', (ctx) => {
      originId = ctx.originId // a remote worker would get it as the CloudEvents originid
    })
    const pending = c.request('job.start', 'job:1', undefined, { reply: 'job.done', timeout: 2000 })
    await new Promise((r) => setTimeout(r, 10))
    await c.receive({
      id: 'r1',
      source: 'worker',
      type: 'job.done',
      subject: 'job:1',
      payload: 42,
      originId,
    })
    expect((await pending).payload).toBe(42)
  })

  it('rejects on timeout, on a failed request, and on close', async () => {
    const c = createContainer()
    c.onError(() => {})
    c.handlers().on('broken', () => {
      throw new Error('boom')
    })
    await expect(
      c.request('silent', 's', undefined, { reply: 'never', timeout: 20 }),
    ).rejects.toSatisfy((e) => isSubstateError(e, 'TIMEOUT'))
    await expect(c.request('broken', 's', undefined, { reply: 'never' })).rejects.toBeInstanceOf(
      AggregateError,
    )
    const pending = c.request('silent', 's', undefined, { reply: 'never' })
    await c.close()
    await expect(pending).rejects.toSatisfy((e) => isSubstateError(e, 'SHUTDOWN'))
  })
})

describe('event log', () => {
  it('keeps the most recent events, newest first, filterable', async () => {
    const c = createContainer({ eventLog: 5 })
    const { emit } = c.handlers()
    for (let i = 0; i < 7; i++) await emit(i % 2 ? 'device.alert' : 'user.seen', `s:${i}`)
    const all = c.eventLog.recent()
    expect(all.map((e) => e.subject)).toEqual(['s:6', 's:5', 's:4', 's:3', 's:2'])
    expect(c.eventLog.recent(2, { type: 'device.*' }).map((e) => e.subject)).toEqual(['s:5', 's:3'])
    expect(c.eventLog.recent(10, { subject: 's:4' })).toHaveLength(1)
    const r = await emit('x', 's')
    expect(c.eventLog.recent(10, { originId: r.event.originId }).map((e) => e.type)).toEqual(['x'])
  })
})
