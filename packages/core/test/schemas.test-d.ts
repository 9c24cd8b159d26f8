import type { StandardSchemaV1 as Spec } from '@standard-schema/spec'
import { createContainer, type EmitResult, type StandardSchemaV1 } from '@substate/core'
import { expectTypeOf, test } from 'vitest'

/** A schema as any Standard Schema library types it (here the spec's own interface). */
declare function schema<Input, Output = Input>(): Spec<Input, Output>

test("a schema from the spec's package is a Standard Schema to Substate", () => {
  expectTypeOf<Spec<{ a: string }>>().toMatchTypeOf<StandardSchemaV1>()
})

test('ctx.payload and emit are typed from the schemas (their output)', () => {
  const c = createContainer({
    schemas: {
      'order.created': schema<
        { orderId: string; currency?: string },
        { orderId: string; currency: string }
      >(),
      'device.reading': schema<{ cpu: number }>(),
    },
  })
  c.on('order.created', (ctx) => {
    expectTypeOf(ctx.payload).toEqualTypeOf<{ orderId: string; currency: string }>()
    // @ts-expect-error not in the schema
    ctx.payload.total
  })
  c.on('device.reading', (ctx) => expectTypeOf(ctx.payload.cpu).toBeNumber())
  expectTypeOf(c.emit('device.reading', 'device:1', { cpu: 5 })).toEqualTypeOf<
    Promise<EmitResult>
  >()
  // @ts-expect-error a payload of the wrong type
  c.emit('device.reading', 'device:1', { cpu: 'high' })
  // @ts-expect-error a schema must be a Standard Schema
  createContainer({ schemas: { x: { parse: () => 1 } } })
})

test('a container without schemas keeps its explicit type arguments', () => {
  const c = createContainer<{ a: { n: number } }>({ source: 's' })
  c.on('a', (ctx) => expectTypeOf(ctx.payload.n).toBeNumber())
})
