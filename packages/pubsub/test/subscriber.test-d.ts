import { PubSub } from '@google-cloud/pubsub'
import { createContainer } from '@substate/core'
import { type PubsubSubscriber, pubsubSubscriber } from '@substate/pubsub'
import { expectTypeOf, test } from 'vitest'

type Events = {
  'order.created': { orderId: string; total: number }
  'order.cancelled': { reason: string }
}

const client = new PubSub({ projectId: 'types' })

test('pubsubSubscriber takes a container typed with an event map', () => {
  const typed = createContainer<Events>()
  expectTypeOf(
    pubsubSubscriber(typed, { client, subscriptions: 'orders' }),
  ).toEqualTypeOf<PubsubSubscriber>()
  // and still an untyped one
  expectTypeOf(
    pubsubSubscriber(createContainer(), { client, subscriptions: ['a', 'b'] }),
  ).toEqualTypeOf<PubsubSubscriber>()
  typed.on('order.created', (ctx) => {
    expectTypeOf(ctx.payload.total).toBeNumber()
  })
})

test('pubsubSubscriber reports what is not a container or a missing option', () => {
  // @ts-expect-error an object that is not a container
  pubsubSubscriber({ receive: async () => 'handled' }, { client, subscriptions: 'orders' })
  // @ts-expect-error subscriptions are required
  pubsubSubscriber(createContainer<Events>(), { client })
  // @ts-expect-error the client is a PubSub client, not a project id
  pubsubSubscriber(createContainer<Events>(), { client: 'my-project', subscriptions: 'orders' })
})
