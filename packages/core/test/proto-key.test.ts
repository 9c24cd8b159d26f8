/**
 * A JSON key `__proto__` (an own property after `JSON.parse`) is data like any other key: copies
 * of values and payloads keep it as an own property, and never take it as their prototype.
 */
import { createContainer, type JsonValue } from '@substate/core'
import { describe, expect, it } from 'vitest'

const hostile = (): Record<string, JsonValue> =>
  JSON.parse('{"name":"x","__proto__":{"isAdmin":true}}') as Record<string, JsonValue>

const keptAsData = (v: unknown): void => {
  const o = v as Record<string, unknown>
  expect(Object.getPrototypeOf(o)).toBe(Object.prototype)
  expect(o.isAdmin).toBeUndefined()
  expect(Object.hasOwn(o, '__proto__')).toBe(true)
  expect(JSON.stringify(o)).toBe('{"name":"x","__proto__":{"isAdmin":true}}')
}

describe('a "__proto__" key in JSON data', () => {
  it('stays an own property of a stored value, of what get returns and of the change event', async () => {
    const container = createContainer()
    const seen: unknown[] = []
    container.on('subject-property-changed', (ctx) => {
      seen.push(ctx.newValue)
    })
    const subject = container.subject('user:1')
    await subject.set('profile', hostile())
    keptAsData(await subject.get('profile'))
    keptAsData(seen[0])
    await container.close()
  })

  it('stays an own property of a received payload and of an emitted one', async () => {
    const container = createContainer()
    const payloads: unknown[] = []
    container.on('user.*', (ctx) => {
      payloads.push(ctx.payload)
    })
    await container.receive({
      id: '1',
      source: 't',
      type: 'user.in',
      subject: 'user:1',
      payload: hostile(),
    })
    await container.emit('user.out', 'user:1', hostile())
    expect(payloads).toHaveLength(2)
    for (const p of payloads) keptAsData(p)
    await container.close()
  })
})
