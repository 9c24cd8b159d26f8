import {
  createContainer,
  type EmitResult,
  type JsonValue,
  SUBJECT_PROPERTY_CHANGED,
} from '@substate/core'
import { expectTypeOf, test } from 'vitest'

type Events = {
  'order.created': { orderId: string; total: number }
  'order.cancelled': { reason: string }
}

test('a typed event map types on and emit', () => {
  const { on, emit, when } = createContainer<Events>().handlers()
  on('order.created', (ctx) => {
    expectTypeOf(ctx.payload).toEqualTypeOf<{ orderId: string; total: number }>()
  })
  on(
    'order.created',
    when((ctx) => ctx.subject.name !== ''),
    { retry: { attempts: 2 } },
    (ctx) => {
      expectTypeOf(ctx.payload.orderId).toBeString()
    },
  )
  on(SUBJECT_PROPERTY_CHANGED, (ctx) => {
    expectTypeOf(ctx.payload.property_name).toBeString()
    expectTypeOf(ctx.newValue).toEqualTypeOf<JsonValue | undefined>()
  })
  on('device.*', (ctx) => {
    expectTypeOf(ctx.payload).toBeUnknown()
  })
  // A batch handler gets the contexts of its events, typed as a per-event handler's.
  on('order.created', { batch: { size: 10, wait: 50 } }, async (ctxs) => {
    expectTypeOf(ctxs[0]!.payload.total).toBeNumber()
    expectTypeOf(ctxs.length).toBeNumber()
  })
  on(
    'order.created',
    when((ctx) => ctx.payload.total > 0),
    { batch: { size: 10, wait: 50 }, retry: { attempts: 2 } },
    (ctxs) => {
      expectTypeOf(ctxs).toBeArray()
    },
  )
  expectTypeOf(emit('order.created', 'order:1', { orderId: '1', total: 3 })).toEqualTypeOf<
    Promise<EmitResult>
  >()
  // @ts-expect-error: wrong payload for a typed event
  void emit('order.created', 'order:1', { orderId: 1 })
  void emit('anything.else', 'x', { free: 'form' })
})

test('untyped use keeps working', () => {
  const { on, emit } = createContainer().handlers()
  on('x', (ctx) => {
    expectTypeOf(ctx.payload).toBeUnknown()
  })
  void emit('x', 's', { any: 'thing' })
  const s = createContainer().subject('s')
  expectTypeOf(s.set('n', (n = 0) => n + 1)).toEqualTypeOf<Promise<number>>()
  expectTypeOf(s.get<number>('n')).toEqualTypeOf<Promise<number>>()
})
