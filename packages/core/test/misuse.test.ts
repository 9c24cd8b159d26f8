import {
  createContainer,
  type EventContext,
  isSubstateError,
  type JsonValue,
  ShutdownError,
} from '@substate/core'
import { describe, expect, it } from 'vitest'

describe('invalid glob patterns throw a TypeError', () => {
  const bad = ['[', 'device.{a', 'device.a}', 'a]', '@(a', 'x.{a,b]', '{[a}]']
  const good = ['device.*', '{a,b}.x', '[abc]', '[]a]', '[^]a]', '!x', '@(a|b)', 'a\\[', 'x.\\{a']

  it.each(bad)('on / route / select reject %j', (pattern) => {
    const c = createContainer()
    const { on } = c.handlers()
    expect(() => on(pattern, () => {})).toThrow(TypeError)
    expect(() => on(pattern, () => {})).toThrow(/invalid pattern .*escape a literal one/)
    expect(() => c.route(pattern, { name: 'x', send: async () => {} })).toThrow(TypeError)
    expect(() => c.select(pattern)).toThrow(TypeError)
  })

  it.each(good)('accepts %j', (pattern) => {
    const { on } = createContainer().handlers()
    expect(typeof on(pattern, () => {})).toBe('function')
  })

  it('an escaped bracket matches itself', async () => {
    const c = createContainer()
    const { on, emit } = c.handlers()
    const seen: string[] = []
    on('x.\\{a', (ctx) => void seen.push(ctx.type))
    await emit('x.{a', 's')
    await emit('x.a', 's')
    expect(seen).toEqual(['x.{a'])
  })
})

describe('on() without a handler', () => {
  const nextWarning = (): Promise<Error & { code?: string }> =>
    new Promise((resolve) => process.once('warning', resolve))

  it('warns when its decorator is never applied', async () => {
    const { on, emit } = createContainer().handlers()
    const warned = nextWarning()
    on('order.created')
    const w = await warned
    expect(w.code).toBe('SUBSTATE_ON_WITHOUT_HANDLER')
    expect(w.message).toContain('on("order.created") was called without a handler')
    await emit('order.created', 'o:1') // nothing registered, nothing runs
  })

  it('does not warn when the decorator decorates a method', async () => {
    const c = createContainer()
    const { on, emit } = c.handlers()
    const warnings: string[] = []
    const listen = (w: Error) => void warnings.push(w.message)
    process.on('warning', listen)
    try {
      class Rules {
        seen = 0
        @on('order.created')
        created(_ctx: EventContext) {
          this.seen++
        }
      }
      const rules = new Rules()
      c.register(rules)
      await emit('order.created', 'o:1')
      expect(rules.seen).toBe(1)
      await new Promise((r) => setTimeout(r, 20))
      expect(warnings.filter((m) => m.includes('without a handler'))).toEqual([])
    } finally {
      process.off('warning', listen)
    }
  })
})

describe('emit with a target the container cannot reach', () => {
  it('rejects (does not throw) and keeps the message', async () => {
    const { emit } = createContainer().handlers()
    let p: Promise<unknown> | undefined
    expect(() => {
      p = emit('x', 's', {}, { dispatchUrl: 'http://127.0.0.1:1/' })
    }).not.toThrow()
    await expect(p).rejects.toThrow(
      'emit(..., { dispatchUrl }) needs createContainer({ targets: { dispatchUrl: (url) => httpEmitter({ url }) } })',
    )
    await expect(emit('x', 's', {}, { topic: 't' })).rejects.toThrow(/needs createContainer/)
  })
})

describe('writes after close', () => {
  it('reject with ShutdownError, loaded subject or not', async () => {
    const c = createContainer()
    const loaded = c.subject('dev:1')
    await loaded.set('a', 1)
    await c.close()
    await expect(loaded.set('a', 2)).rejects.toBeInstanceOf(ShutdownError)
    await expect(c.subject('dev:2').set('a', 1)).rejects.toBeInstanceOf(ShutdownError)
    await expect(loaded.delete('a')).rejects.toSatisfy((e) => isSubstateError(e, 'SHUTDOWN'))
    await expect(loaded.setExt('x', 1)).rejects.toBeInstanceOf(ShutdownError)
  })

  it('handlers still running while the container drains may write', async () => {
    const c = createContainer()
    const { on } = c.handlers()
    let release!: () => void
    const gate = new Promise<void>((r) => {
      release = r
    })
    on('slow', async (ctx) => {
      await gate
      await ctx.subject.set('done', true)
    })
    const received = c.receive({ id: '1', source: 't', type: 'slow', subject: 'job:1' })
    const closed = c.close()
    release()
    expect((await received).status).toBe('handled')
    expect((await closed).errors).toEqual([])
  })
})

describe('error messages of non-JSON values', () => {
  const s = () => createContainer().subject('dev:1')

  it('name the nested path inside the property, with the right article', () => {
    expect(() => s().set('f', { x: undefined } as never)).toThrow(
      'property "f.x" of dev:1 is undefined, which is not a JSON value (leave it out, or use null)',
    )
    expect(() => s().set('f', { list: [1, () => 1] } as never)).toThrow(
      'property "f.list[1]" of dev:1 is a function',
    )
    expect(() => s().set('f', [{ b: 1n }] as never)).toThrow(
      'property "f[0].b" of dev:1 is a bigint',
    )
    expect(() => s().set('f', { at: new Date() } as never)).toThrow(
      'property "f.at" of dev:1 is a Date',
    )
    expect(() => s().set('f', new ArrayBuffer(1) as never)).toThrow(
      'property "f" of dev:1 is an ArrayBuffer',
    )
    expect(() => s().set('f', Symbol('x') as never)).toThrow('property "f" of dev:1 is a symbol')
    expect(() => s().set('f', Number.NaN)).toThrow('property "f" of dev:1 is NaN')
  })

  it('accept null at any depth', async () => {
    const value = { a: null, b: [null, { c: null }] }
    expect(await s().set('f', value)).toEqual(value)
  })

  it('name the field inside an event payload', async () => {
    const { emit } = createContainer().handlers()
    expect(() => emit('order.created', 'o:1', { items: [{ qty: undefined }] } as never)).toThrow(
      'field "items[0].qty" of the payload of order.created is undefined',
    )
  })

  it('refuse values nested deeper than 256 levels with a TypeError naming the property', () => {
    const nest = (depth: number): JsonValue => {
      let v: unknown = 1
      for (let i = 0; i < depth; i++) v = { x: v }
      return v as JsonValue
    }
    expect(() => s().set('ok', nest(256))).not.toThrow()
    expect(() => s().set('f', nest(257))).toThrow(TypeError)
    expect(() => s().set('f', nest(100_000))).toThrow(
      /^property "f(\.x){256}" of dev:1 is nested more than 256 levels deep/,
    )
    let arr: JsonValue = []
    for (let i = 0; i < 100_000; i++) arr = [arr]
    expect(() => s().set('f', arr)).toThrow(TypeError)
  })
})
