/**
 * Google Cloud Pub/Sub for Substate: a publisher (an outbound emitter for `container.route` and
 * `emit(..., { topic })`) and a subscriber feeding messages into a container in units of work,
 * both speaking the CloudEvents Pub/Sub binding (and reading KRules' attributes).
 *
 * @example
 * import { PubSub } from '@google-cloud/pubsub'
 * import { createContainer } from '@substate/core'
 * import { pubsubPublisher, pubsubSubscriber } from '@substate/pubsub'
 *
 * const client = new PubSub({ projectId: 'my-project' })
 * const container = createContainer({ source: 'billing' })
 * container.route('invoice.*', pubsubPublisher({ client, topic: 'invoices' }), { policy: 'direct' })
 * container.on('order.paid', async (ctx) => ctx.subject.set('paid', true))
 * pubsubSubscriber(container, { client, subscriptions: 'billing-orders' })
 * @module
 */

export type { PubsubDeadLettersOptions } from './dead-letters.js'
export { DEAD_LETTER_ATTRIBUTE, pubsubDeadLetters, readPubsubDeadLetter } from './dead-letters.js'
export type {
  OutgoingMessage,
  ReceivedMessage,
  ToMessageOptions,
} from './message.js'
export { fromPubsubMessage, toPubsubMessage } from './message.js'
export type {
  PubsubPublisher,
  PubsubPublisherOptions,
  PubsubTopicsOptions,
} from './publisher.js'
export { pubsubPublisher, pubsubTopics } from './publisher.js'
export type {
  PubsubSubscriber,
  PubsubSubscriberOptions,
  PubsubSubscriberState,
  PubsubSubscriberStats,
  PubsubSubscriberStatus,
} from './subscriber.js'
export { pubsubSubscriber } from './subscriber.js'
