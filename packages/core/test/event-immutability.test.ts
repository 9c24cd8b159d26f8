/**
 * One event object is shared by the event log, `events$` subscribers, every handler and the
 * emit result: none of them may change what the others see.
 */
import {
  createContainer,
  type HandlerFailure,
  SUBJECT_PROPERTY_CHANGED,
  type SubstateEvent,
} from '@substate/core'
import { describe, expect, it } from 'vitest'

/** Runs `mutate`, returning what it threw (undefined when it did not throw). */
const attempt = (mutate: () => void): unknown => {
  try {
    mutate()
    return undefined
  } catch (e) {
    return e
  }
}

describe('events are immutable', () => {
  it('an events$ subscriber cannot change the payload handlers see', async () => {
    const c = createContainer()
    const thrown: unknown[] = []
    c.events$.subscribe((e) => {
      thrown.push(attempt(() => ((e.payload as { n: number }).n = 99)))
      thrown.push(attempt(() => ((e as { type: string }).type = 'other')))
    })
    const seen: unknown[] = []
    c.on('reading', (ctx) => {
      seen.push(ctx.type, structuredClone(ctx.payload))
    })
    const result = await c.emit('reading', 'device:1', { n: 1, nested: { m: [2] } })
    expect(thrown.map((e) => e instanceof TypeError)).toEqual([true, true])
    expect(seen).toEqual(['reading', { n: 1, nested: { m: [2] } }])
    expect(result.event.payload).toEqual({ n: 1, nested: { m: [2] } })
    expect(Object.isFrozen((result.event.payload as { nested: { m: number[] } }).nested.m)).toBe(
      true,
    )
    await c.close()
  })

  it("one handler's change to ctx.newValue reaches neither the next handler nor events$", async () => {
    const c = createContainer()
    const failures: HandlerFailure[] = []
    c.onError((f) => failures.push(f))
    const streamed: SubstateEvent[] = []
    c.events$.subscribe((e) => streamed.push(e))
    c.on(SUBJECT_PROPERTY_CHANGED, function mutates(ctx) {
      ;(ctx.newValue as { level: number }).level = 0
    })
    const seen: unknown[] = []
    c.on(SUBJECT_PROPERTY_CHANGED, (ctx) => {
      seen.push(structuredClone(ctx.newValue), structuredClone(ctx.payload))
    })
    await c.subject('tank:1').set('fill', { level: 80 })
    expect(failures.map((f) => [f.handler, f.error.cause instanceof TypeError])).toEqual([
      ['mutates', true],
    ])
    expect(seen).toEqual([
      { level: 80 },
      { property_name: 'fill', old_value: null, value: { level: 80 } },
    ])
    expect(streamed[0]!.newValue).toEqual({ level: 80 })
    // The subject's own state is a copy, not the frozen event value: it stays writable.
    await c.subject('tank:1').set('fill', (v: { level: number }) => ({ ...v, level: v.level + 1 }))
    expect(await c.subject('tank:1').get('fill')).toEqual({ level: 81 })
    await c.close()
  })

  it('a received event carries a frozen copy of its payload; the caller keeps its object', async () => {
    const c = createContainer()
    const payload = { n: 1 }
    let seen: unknown
    c.on('reading', (ctx) => {
      seen = attempt(() => ((ctx.payload as { n: number }).n = 2))
    })
    const r = await c.receive({ id: '1', source: 'test', type: 'reading', subject: 'd', payload })
    expect(r.status).toBe('handled')
    expect(seen).toBeInstanceOf(TypeError)
    expect(r.result!.event.payload).toEqual({ n: 1 })
    expect(Object.isFrozen(payload)).toBe(false)
    await c.close()
  })
})
