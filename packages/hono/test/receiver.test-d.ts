import { createContainer } from '@substate/core'
import { createReceiver } from '@substate/hono'
import type { Hono } from 'hono'
import { expectTypeOf, test } from 'vitest'

type Events = {
  'device.metrics': { cpu: number; memory?: number }
  'device.alert.critical': { cpu: number }
}

test('createReceiver takes a container typed with an event map', () => {
  const typed = createContainer<Events>()
  expectTypeOf(createReceiver(typed)).toEqualTypeOf<Hono>()
  expectTypeOf(createReceiver(typed, { path: '/events/in' })).toEqualTypeOf<Hono>()
  // and still an untyped one
  expectTypeOf(createReceiver(createContainer())).toEqualTypeOf<Hono>()
  // the typed container keeps its types beside the receiver
  typed.on('device.metrics', (ctx) => {
    expectTypeOf(ctx.payload.cpu).toBeNumber()
  })
})

test('createReceiver reports what is not a container or not an option', () => {
  // @ts-expect-error a container is required
  createReceiver()
  // @ts-expect-error an object that is not a container
  createReceiver({ receive: async () => 'handled' })
  // @ts-expect-error an unknown option
  createReceiver(createContainer<Events>(), { port: 8080 })
  // @ts-expect-error maxBodySize is a number of bytes
  createReceiver(createContainer<Events>(), { maxBodySize: '1mb' })
})
