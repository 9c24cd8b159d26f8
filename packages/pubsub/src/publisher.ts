import { AsyncLocalStorage } from 'node:async_hooks'
import type { BatchPublishOptions, PubSub, Topic } from '@google-cloud/pubsub'
import type { OutboundEmitter, OutboundMeta, Subject, SubstateEvent } from '@substate/core'
import { DeliveryError } from '@substate/core'
import { toPubsubMessage } from './message.js'

type MessageOptions = Parameters<Topic['publishMessage']>[0]

/** Options of {@link pubsubPublisher}. */
export interface PubsubPublisherOptions {
  /** The Pub/Sub client (`new PubSub({ projectId })`). Not closed by the publisher. */
  readonly client: PubSub
  /**
   * The topic: a name (in the client's project), a full path `projects/p/topics/t`, or a function
   * choosing one per event.
   */
  readonly topic: string | ((event: SubstateEvent) => string)
  /**
   * The ordering key of each message, or `false` for none. Messages with one key are delivered in
   * publish order when the subscription has message ordering enabled.
   * @default the subject name
   */
  readonly orderingKey?: false | ((event: SubstateEvent) => string)
  /**
   * Client-side batching: messages published within `maxMilliseconds` are sent in one request.
   * @default { maxMessages: 100, maxMilliseconds: 10 } (the client's defaults)
   */
  readonly batching?: BatchPublishOptions
  /**
   * Also write KRules' unprefixed attributes so that a Python KRules subscriber understands the
   * messages.
   * @default false
   */
  readonly krules?: boolean
  /**
   * Milliseconds a publish may take before `send` rejects with a `DeliveryError`: while Pub/Sub is
   * unreachable the client keeps retrying for minutes, and the caller (a unit of work, an outbox
   * relay) should rather fail and retry on its own schedule. The client may still deliver a
   * publish that timed out; the event keeps its CloudEvents id, so a deduplicating subscriber
   * (ours) handles a resent copy once.
   * @default 30_000
   */
  readonly timeout?: number
  /**
   * Name in failures (`route:<name>`) and logs.
   * @default `pubsub:<topic>`
   */
  readonly name?: string
}

/** A Pub/Sub outbound emitter; `flush()` waits (at most `timeout`) for every publish still outstanding. */
export interface PubsubPublisher extends OutboundEmitter {
  flush(): Promise<void>
  close(): Promise<void>
}

/**
 * An outbound emitter publishing events to Google Cloud Pub/Sub in the CloudEvents Pub/Sub binding
 * (`ce-` attributes, JSON payload as data), for `container.route(pattern, publisher)`.
 *
 * `send` resolves once Pub/Sub accepted the message and rejects with a `DeliveryError` (transport
 * `pubsub`, the client's error as `cause`) when the publish failed, so the failure reaches the
 * emitter of the event (as a `route:<name>` failure). Concurrent sends are
 * batched by the client (publish calls are never serialised one at a time). Messages carry the
 * subject name as ordering key; after a failed publish the paused key is resumed, so later events
 * of that subject publish again.
 *
 * @example
 * import { PubSub } from '@google-cloud/pubsub'
 * import { createContainer } from '@substate/core'
 * import { pubsubPublisher } from '@substate/pubsub'
 *
 * const container = createContainer({ source: 'orders' })
 * const client = new PubSub({ projectId: 'my-project' })
 * container.route('order.*', pubsubPublisher({ client, topic: 'orders' }), { policy: 'direct' })
 */
export function pubsubPublisher({
  client,
  topic,
  orderingKey = (event) => event.subject,
  batching,
  krules = false,
  timeout = 30_000,
  name = `pubsub:${typeof topic === 'string' ? topic : 'dynamic'}`,
}: PubsubPublisherOptions): PubsubPublisher {
  if (typeof client?.topic !== 'function')
    throw new TypeError('pubsubPublisher(): client must be a PubSub client (new PubSub(...))')
  if (typeof topic !== 'string' && typeof topic !== 'function')
    throw new TypeError('pubsubPublisher(): topic must be a topic name, path or (event) => name')
  if (!(timeout > 0))
    throw new TypeError(`pubsubPublisher(): timeout must be > 0 ms, got ${timeout}`)
  // Publishes run in the context the publisher was made in, not the event's: the client's batch
  // timers and gRPC calls then neither carry nor retain the cascade's async-local state (which,
  // besides, costs CPU on every async resource the client creates at thousands of messages/s).
  const detached = AsyncLocalStorage.snapshot()
  const ordered = orderingKey !== false
  const topics = new Map<string, Topic>()
  const pending = new Set<Promise<unknown>>()
  const topicFor = (event: SubstateEvent): Topic => {
    const id = typeof topic === 'string' ? topic : topic(event)
    let t = topics.get(id)
    if (t === undefined) {
      t = client.topic(id, { messageOrdering: ordered, ...(batching ? { batching } : {}) })
      topics.set(id, t)
    }
    return t
  }

  return {
    name,
    async send(event: SubstateEvent, subject: Subject, meta?: OutboundMeta): Promise<void> {
      const t = topicFor(event)
      const message: MessageOptions = toPubsubMessage(event, await subject.getExtProps(), {
        krules,
      })
      // An interceptor's headers become attributes; the CloudEvents attributes win over them.
      if (meta !== undefined) message.attributes = { ...meta.headers, ...message.attributes }
      const key = ordered ? orderingKey(event) : undefined
      if (key) message.orderingKey = key
      const publish = detached(() => t.publishMessage(message))
      pending.add(publish)
      let timer: NodeJS.Timeout | undefined
      try {
        await Promise.race([
          publish,
          new Promise((_, reject) => {
            timer = setTimeout(
              () => reject(new Error(`no answer from Pub/Sub within ${timeout} ms (timeout)`)),
              timeout,
            )
          }),
        ])
      } catch (e) {
        // A publish that fails after its timeout pauses its key then: resume it then too.
        if (key) publish.catch(() => t.resumePublishing(key))
        // An ordered publish that failed pauses its key: every later publish with that key would
        // be rejected until resumed. The caller sees this failure; the next event goes out again.
        if (key) t.resumePublishing(key)
        throw new DeliveryError(
          'pubsub',
          `publish of ${event.type} for ${event.subject} to ${t.name} failed: ${(e as Error)?.message ?? e}`,
          { cause: e },
        )
      } finally {
        clearTimeout(timer)
        void publish.then(
          () => pending.delete(publish),
          () => pending.delete(publish),
        )
      }
    },
    async flush(): Promise<void> {
      // Bounded by `timeout` too: a close during an outage must not wait for minutes.
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        (async () => {
          await Promise.allSettled([...topics.values()].map((t) => t.flush()))
          await Promise.allSettled([...pending])
        })(),
        new Promise((resolve) => {
          timer = setTimeout(resolve, timeout)
        }),
      ])
      clearTimeout(timer)
    },
    async close(): Promise<void> {
      await this.flush()
    },
  }
}

/** Options of {@link pubsubTopics}: those of {@link pubsubPublisher} but the topic. */
export type PubsubTopicsOptions = Omit<PubsubPublisherOptions, 'topic' | 'name'>

/**
 * The `targets.topic` of `createContainer`, so that `emit(type, subject, payload, { topic })`
 * publishes to that topic (a name or a full path). Keeps one publisher per topic.
 *
 * @example
 * const container = createContainer({ targets: { topic: pubsubTopics({ client }) } })
 * await container.emit('user.created', 'user:1', { name: 'Ada' }, { topic: 'user-events' })
 */
export function pubsubTopics(options: PubsubTopicsOptions): (topic: string) => PubsubPublisher {
  const publishers = new Map<string, PubsubPublisher>()
  return (topic) => {
    let p = publishers.get(topic)
    if (p === undefined) {
      p = pubsubPublisher({ ...options, topic })
      publishers.set(topic, p)
    }
    return p
  }
}
