import { compileGlob, createContainer } from '@substate/core'
import { describe, expect, it } from 'vitest'

describe('glob patterns (micromatch)', () => {
  const cases: Array<[string, string, boolean]> = [
    ['device.*', 'device.alert.critical', true], // * crosses dots, as in KRules
    ['device.*', 'device.alert', true],
    ['device.*', 'devices.alert', false],
    ['device.*', 'Device.alert', false], // case-sensitive
    ['**', 'anything/at/all', true],
    ['a/*', 'a/b/c', false], // * stops at /
    ['device.?', 'device.1', true],
    ['device.?', 'device.12', false],
    ['device.[abc]', 'device.b', true],
    ['device.[abc]', 'device.d', false],
    ['device.[^abc]', 'device.d', true],
    ['device.[^abc]', 'device.a', false],
    ['{user,order}.created', 'order.created', true],
    ['{user,order}.created', 'item.created', false],
    ['!device.*', 'user.created', true],
    ['!device.*', 'device.alert', false],
    ['subject-property-changed', 'subject-property-changed', true],
    ['subject-property-changed', 'subject-property-changedx', false],
  ]
  it.each(cases)('%s vs %s → %s', (pattern, type, expected) => {
    expect(compileGlob(pattern)(type)).toBe(expected)
  })

  it('rejects an empty pattern with a TypeError', () => {
    expect(() => compileGlob('')).toThrow(TypeError)
    const { on } = createContainer().handlers()
    expect(() => on('', () => {})).toThrow(TypeError)
    expect(() => on(() => {})).toThrow(/at least one event type pattern/)
  })
})

describe('routing', () => {
  it('runs matching handlers in registration order, once each, with several patterns', async () => {
    const { on, emit } = createContainer().handlers()
    const seen: string[] = []
    on('order.*', () => void seen.push('glob'))
    on('order.created', 'order.updated', () => void seen.push('exact'))
    on(['user.*', 'order.created'], () => void seen.push('array'))
    on('user.*', () => void seen.push('never'))
    await emit('order.created', 'order:1')
    expect(seen).toEqual(['glob', 'exact', 'array'])
  })

  it('unsubscribes (function, Disposable, AbortSignal) and re-routes a type already seen', async () => {
    const { on, emit } = createContainer().handlers()
    const seen: string[] = []
    const off = on('x', () => void seen.push('a'))
    {
      using _b = on('x', () => void seen.push('b'))
      await emit('x', 's')
    }
    const ac = new AbortController()
    on('x', { signal: ac.signal }, () => void seen.push('c'))
    await emit('x', 's')
    off()
    ac.abort()
    await emit('x', 's')
    on('x', () => void seen.push('d'))
    await emit('x', 's')
    expect(seen).toEqual(['a', 'b', 'a', 'c', 'd'])
  })
})
