/**
 * A tiny client for the Google Pub/Sub emulator's REST API, for test fixtures and assertions
 * that must not go through the library under test: a fresh topic and subscription per test,
 * raw publishes (as a KRules Python service would send them) and raw pulls.
 *
 * @example
 * ```ts
 * import { createEmulatorTopic } from '../support/pubsub-emulator.js'
 *
 * const fixture = await createEmulatorTopic({ ordering: true })
 * const client = new PubSub({ projectId: fixture.projectId }) // reads PUBSUB_EMULATOR_HOST
 * // ... publish through client.topic(fixture.topic), then:
 * const messages = await fixture.pull()
 * await fixture.delete()
 * ```
 * @module
 */
import { pubsubEmulatorHost } from './services.js'

/** The project id every test uses on the emulator. */
export const PUBSUB_PROJECT_ID = 'substate-test'

let counter = 0

/**
 * A topic or subscription name unique to this process and call: `<prefix>-<pid>-<n>-<random>`.
 * Pub/Sub names start with a letter and are 3 to 255 characters of `[A-Za-z0-9-_.~+%]`.
 */
export function uniqueName(prefix = 'substate'): string {
  if (!/^[A-Za-z][A-Za-z0-9\-_.~+%]{0,200}$/.test(prefix) || prefix.startsWith('goog')) {
    throw new TypeError(`uniqueName: invalid prefix ${JSON.stringify(prefix)}`)
  }
  counter += 1
  return `${prefix}-${process.pid}-${counter}-${Math.random().toString(36).slice(2, 8)}`
}

/** Options of {@link createEmulatorTopic}. */
export interface EmulatorTopicOptions {
  /** Prefix of the generated names. @default 'substate' */
  readonly prefix?: string
  /** Create the subscription with message ordering enabled. @default false */
  readonly ordering?: boolean
  /** The subscription's ack deadline in seconds (10 to 600). @default 10 */
  readonly ackDeadlineSeconds?: number
  /** The emulator's `host:port`. @default the one found by the global setup */
  readonly host?: string
}

/** A message as sent to or received from the emulator, with `data` as text. */
export interface EmulatorMessage {
  readonly data: string
  readonly attributes?: Readonly<Record<string, string>>
  readonly orderingKey?: string
}

/** A received message, with the id to acknowledge it by. */
export interface ReceivedEmulatorMessage extends EmulatorMessage {
  readonly ackId: string
  readonly messageId: string
  readonly deliveryAttempt?: number
}

/** A topic with one subscription on the emulator, made for one test. */
export interface EmulatorTopic {
  readonly projectId: string
  /** The topic's short name. */
  readonly topic: string
  /** `projects/substate-test/topics/<topic>` */
  readonly topicPath: string
  /** The subscription's short name. */
  readonly subscription: string
  /** `projects/substate-test/subscriptions/<subscription>` */
  readonly subscriptionPath: string
  /** Publishes raw messages; resolves with their ids. */
  publish(...messages: EmulatorMessage[]): Promise<string[]>
  /** Pulls up to `max` messages (returns at once, possibly none); acks them when `ack`. */
  pull(options?: { max?: number; ack?: boolean }): Promise<ReceivedEmulatorMessage[]>
  /** Deletes the subscription and the topic. */
  delete(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/**
 * Creates a uniquely named topic and a pull subscription to it on the emulator (project
 * `substate-test`). Throws when the emulator is not available.
 */
export async function createEmulatorTopic(
  options: EmulatorTopicOptions = {},
): Promise<EmulatorTopic> {
  const { prefix = 'substate', ordering = false, ackDeadlineSeconds = 10 } = options
  const host = options.host ?? pubsubEmulatorHost
  if (host === undefined) {
    throw new Error(
      "[tests] the Pub/Sub emulator is not available: use describeWith('pubsub', ...)",
    )
  }
  const projectId = PUBSUB_PROJECT_ID
  const topic = uniqueName(`${prefix}-t`)
  const subscription = uniqueName(`${prefix}-s`)
  const topicPath = `projects/${projectId}/topics/${topic}`
  const subscriptionPath = `projects/${projectId}/subscriptions/${subscription}`
  const call = (method: string, path: string, body?: unknown): Promise<unknown> =>
    request(host, method, path, body)

  await call('PUT', topicPath, {})
  await call('PUT', subscriptionPath, {
    topic: topicPath,
    enableMessageOrdering: ordering,
    ackDeadlineSeconds,
  })

  const remove = async (): Promise<void> => {
    await call('DELETE', subscriptionPath).catch(() => {})
    await call('DELETE', topicPath).catch(() => {})
  }
  return {
    projectId,
    topic,
    topicPath,
    subscription,
    subscriptionPath,
    async publish(...messages) {
      const body = {
        messages: messages.map((m) => ({
          data: Buffer.from(m.data).toString('base64'),
          attributes: m.attributes,
          orderingKey: m.orderingKey,
        })),
      }
      const res = (await call('POST', `${topicPath}:publish`, body)) as { messageIds: string[] }
      return res.messageIds
    },
    async pull({ max = 100, ack = true } = {}) {
      const res = (await call('POST', `${subscriptionPath}:pull`, {
        maxMessages: max,
        returnImmediately: true,
      })) as { receivedMessages?: RawReceived[] }
      const received = (res.receivedMessages ?? []).map(
        (r): ReceivedEmulatorMessage => ({
          ackId: r.ackId,
          messageId: r.message.messageId,
          data: Buffer.from(r.message.data ?? '', 'base64').toString(),
          attributes: r.message.attributes ?? {},
          orderingKey: r.message.orderingKey,
          deliveryAttempt: r.deliveryAttempt,
        }),
      )
      if (ack && received.length > 0) {
        await call('POST', `${subscriptionPath}:acknowledge`, {
          ackIds: received.map((r) => r.ackId),
        })
      }
      return received
    },
    delete: remove,
    [Symbol.asyncDispose]: remove,
  }
}

interface RawReceived {
  ackId: string
  deliveryAttempt?: number
  message: {
    messageId: string
    data?: string
    attributes?: Record<string, string>
    orderingKey?: string
  }
}

async function request(
  host: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<unknown> {
  const res = await fetch(`http://${host}/v1/${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  })
  const text = await res.text()
  if (!res.ok) {
    throw new Error(`[tests] Pub/Sub emulator ${method} ${path}: ${res.status} ${text.trim()}`)
  }
  return text ? JSON.parse(text) : {}
}
