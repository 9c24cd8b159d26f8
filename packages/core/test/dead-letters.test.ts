import {
  createContainer,
  createMemoryDeadLetters,
  createMemoryStorage,
  type DeadLetter,
  decodeDeadLetter,
  encodeDeadLetter,
  HandlerError,
  type ListableDeadLetterSink,
  type SubjectStorage,
} from '@substate/core'
import { describe, expect, it } from 'vitest'

/** A billing handler failing until `healthy`, and a counter next to it. */
function app(storage: SubjectStorage, deadLetter: ListableDeadLetterSink) {
  const c = createContainer({ storage, deadLetter })
  const state = { healthy: false, billed: 0 }
  c.on('order.created', { name: 'billing' }, async (ctx) => {
    if (!state.healthy) throw new Error('payment gateway down', { cause: new Error('ECONNRESET') })
    state.billed++
    await ctx.subject.set('billed', true)
  })
  return { c, state }
}

const event = (id: string, subject = 'order:1') => ({
  id,
  source: 'shop',
  type: 'order.created',
  subject,
  payload: { total: 12 },
})

describe('createMemoryDeadLetters', () => {
  it('keeps, lists (newest first, filtered), bounds and removes entries; it is not durable', async () => {
    const sink = createMemoryDeadLetters({ max: 3 })
    expect(sink.durable).toBe(false)
    const { c } = app(createMemoryStorage(), sink)
    for (const id of ['1', '2', '3', '4']) {
      // Not durable: the unit failed, the sender would retry.
      expect((await c.receive(event(id, `order:${id}`))).status).toBe('failed')
    }
    const listed = await sink.list()
    expect(listed.map((e) => e.event.id)).toEqual(['4', '3', '2'])
    expect(listed[0]).toMatchObject({
      handler: 'billing',
      attempts: 1,
      event: { type: 'order.created', subject: 'order:4', payload: { total: 12 } },
    })
    expect(listed[0]?.error).toBeInstanceOf(HandlerError)
    expect(await sink.list({ subject: 'order:3' })).toHaveLength(1)
    expect(await sink.list({ limit: 1 })).toHaveLength(1)
    expect(await sink.list({ handler: 'other' })).toEqual([])
    // The same event failing again replaces its entry.
    await c.receive(event('4', 'order:4'))
    expect(await sink.list()).toHaveLength(3)
    expect(await sink.remove([listed[0]!.id, 'nope'])).toBe(1)
    expect((await sink.list()).map((e) => e.event.id)).toEqual(['3', '2'])
    await c.close()
  })
})

describe('encodeDeadLetter / decodeDeadLetter', () => {
  it('round-trip an entry through JSON, errors with their causes and codes', () => {
    const entry: DeadLetter = {
      event: Object.freeze({
        id: 'e1',
        type: 't',
        source: 's',
        subject: 'x:1',
        time: 5,
        payload: { a: [1] },
        originId: 'e0',
        extra: { audit: new Date() },
        extensions: { tenant: 'acme' },
      }),
      handler: 'h',
      error: new HandlerError('h', 't', 'x:1', { cause: new TypeError('bad') }),
      attempts: 3,
      at: 42,
    }
    const back = decodeDeadLetter(JSON.parse(JSON.stringify(encodeDeadLetter(entry))))
    expect(back).toMatchObject({ handler: 'h', attempts: 3, at: 42, id: 'h|s|e1' })
    expect(back.event).toMatchObject({ id: 'e1', payload: { a: [1] }, originId: 'e0' })
    expect(back.event.extensions).toEqual({ tenant: 'acme' })
    expect(back.event.extra).toBeUndefined()
    expect(back.error.name).toBe('HandlerError')
    expect((back.error as { code?: string }).code).toBe('HANDLER')
    expect((back.error.cause as Error).message).toBe('bad')
    expect(() => decodeDeadLetter({ nope: 1 })).toThrow(TypeError)
  })
})
