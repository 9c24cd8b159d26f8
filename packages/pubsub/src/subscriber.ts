import type { Message, PubSub, SubscriberOptions, Subscription } from '@google-cloud/pubsub'
import { Duration } from '@google-cloud/pubsub'
import type { Container, EventMap, ReceiveResult } from '@substate/core'
import { isSubstateError } from '@substate/core'
import { fromPubsubMessage } from './message.js'

/** Options of {@link pubsubSubscriber}. */
export interface PubsubSubscriberOptions {
  /** The Pub/Sub client (`new PubSub({ projectId })`). Not closed by the subscriber. */
  readonly client: PubSub
  /** Subscription names (in the client's project) or full paths `projects/p/subscriptions/s`. */
  readonly subscriptions: string | readonly string[]
  /**
   * Messages held at once per subscription (client flow control). Events of one subject run one
   * at a time whatever this is; the container's own `concurrency` bounds units of work across
   * subscriptions.
   * @default 100
   */
  readonly concurrency?: number
  /**
   * How long `close()` waits for messages in flight to be handled and acknowledged, in ms. What is
   * still running then is nacked (Pub/Sub delivers it again).
   * @default 10_000
   */
  readonly closeTimeout?: number
  /**
   * More options for `client.subscription(name, options)` (ack deadlines, streaming). Flow
   * control and close behaviour are set from `concurrency` and `closeTimeout` unless given here.
   */
  readonly subscriberOptions?: SubscriberOptions
  /**
   * Decides the fate of a message that is not an event (no type or subject, data that is not the
   * JSON it claims to be), after it was reported: `'ack'` drops it, `'nack'` leaves it to the
   * subscription's dead-letter policy (after `maxDeliveryAttempts` Pub/Sub moves it to the
   * dead-letter topic). Forward it somewhere first if you want to keep it.
   * @default () => 'nack'
   */
  readonly onInvalid?: (message: Message, error: Error) => 'ack' | 'nack' | Promise<'ack' | 'nack'>
  /**
   * Called with what is not already reported through `container.onError`: stream errors
   * (subscription missing, permission denied), invalid messages, and messages nacked for another
   * reason than a handler failure (storage down, shutdown).
   * @default logs with console.error
   */
  readonly onError?: (error: Error, message?: Message) => void
}

/** Counters of a subscriber since it started. */
export interface PubsubSubscriberStats {
  readonly received: number
  readonly acked: number
  readonly nacked: number
  /** Messages that were not events (also counted as acked or nacked). */
  readonly invalid: number
  /** Messages being handled now. */
  readonly inflight: number
}

/** A running subscriber: pulls until closed. */
export interface PubsubSubscriber {
  /** The subscriptions, as the client names them (full paths). */
  readonly subscriptions: readonly string[]
  stats(): PubsubSubscriberStats
  /**
   * Stops pulling and waits (at most `closeTimeout`) for messages in flight to be handled and
   * acknowledged. Idempotent; also run by `container.close()`.
   */
  close(): Promise<void>
}

/**
 * Feeds Pub/Sub messages into a container. Each message becomes an incoming event (CloudEvents
 * Pub/Sub binding, or the unprefixed attributes of a Python KRules publisher) handled by
 * `container.receive` in a unit of work, and is
 *
 * - **acked** once its handlers succeeded (or their failures were durably dead-lettered) and every
 *   subject it touched was stored, or when it is a duplicate of an event already handled;
 * - **nacked** otherwise (a handler failed, storage failed, the container is closing): Pub/Sub
 *   delivers it again, and with an idempotent storage the redelivery has no second effect on
 *   subjects the first attempt had stored.
 *
 * Messages with one ordering key are handled one at a time in delivery order; when one is nacked,
 * the ones queued behind it on that key are nacked unhandled too, so the redelivery (which repeats
 * them in order) keeps the order. Start it after registering handlers: messages can arrive at once.
 * `container.close()` closes it first.
 *
 * @example
 * import { PubSub } from '@google-cloud/pubsub'
 * import { createContainer } from '@substate/core'
 * import { pubsubSubscriber } from '@substate/pubsub'
 *
 * const container = createContainer({ storage })
 * container.on('order.created', async (ctx) => ctx.subject.set('status', 'new'))
 * pubsubSubscriber(container, { client: new PubSub(), subscriptions: 'orders-worker' })
 */
export function pubsubSubscriber<E extends EventMap>(
  container: Container<E>,
  {
    client,
    subscriptions,
    concurrency = 100,
    closeTimeout = 10_000,
    subscriberOptions,
    onInvalid = () => 'nack',
    onError: userOnError = (error, message) =>
      console.error(`[pubsub]${message ? ` message ${message.id}:` : ''} ${error.message}`),
  }: PubsubSubscriberOptions,
): PubsubSubscriber {
  if (typeof client?.subscription !== 'function')
    throw new TypeError('pubsubSubscriber(): client must be a PubSub client (new PubSub(...))')
  if (!(concurrency >= 1))
    throw new TypeError(`pubsubSubscriber(): concurrency must be >= 1, got ${concurrency}`)
  const names = typeof subscriptions === 'string' ? [subscriptions] : [...subscriptions]
  if (names.length === 0 || names.some((n) => typeof n !== 'string' || n === ''))
    throw new TypeError('pubsubSubscriber(): subscriptions must be one or more subscription names')

  // A throwing hook must not leave a message un-acked (and its ordering key stuck) or crash Node.
  const onError = (error: Error, message?: Message): void => {
    try {
      userOnError(error, message)
    } catch (hookError) {
      console.error('[pubsub] the onError hook threw:', hookError)
    }
  }
  const counts = { received: 0, acked: 0, nacked: 0, invalid: 0 }
  const inflight = new Set<Promise<unknown>>()
  // Per ordering key, the outcome of the last message: whether the next one may run.
  const tails = new Map<string, Promise<boolean>>()

  const ack = (m: Message): true => {
    m.ack()
    counts.acked++
    return true
  }
  const nack = (m: Message): false => {
    m.nack()
    counts.nacked++
    return false
  }

  const handle = async (m: Message, source: string): Promise<boolean> => {
    let result: ReceiveResult
    try {
      const event = fromPubsubMessage(m, source)
      try {
        result = await container.receive(event)
      } catch (e) {
        if (!isSubstateError(e, 'SHUTDOWN')) onError(e as Error, m)
        return nack(m)
      }
    } catch (e) {
      // Not an event. Redelivery will not fix it, so it does not hold up its ordering key.
      counts.invalid++
      const error = e as Error
      onError(new Error(`not an event, ${error.message}`, { cause: e }), m)
      let fate: 'ack' | 'nack' = 'nack'
      try {
        fate = await onInvalid(m, error)
      } catch (hookError) {
        onError(hookError as Error, m)
      }
      if (fate === 'ack') ack(m)
      else nack(m)
      return true
    }
    if (result.status !== 'failed') return ack(m)
    const reported = result.result?.failures.some((f) => f.error === result.error)
    if (!reported && result.error) onError(result.error, m)
    return nack(m)
  }

  const onMessage = (m: Message, source: string): void => {
    counts.received++
    const key = m.orderingKey
    const prev = key ? tails.get(key) : undefined
    const run = (
      prev === undefined ? handle(m, source) : prev.then((ok) => (ok ? handle(m, source) : nack(m)))
    ).catch((e: unknown) => {
      // handle() catches what it expects; anything else must still end in a nack, not a hang.
      onError(e instanceof Error ? e : new Error(String(e)), m)
      return nack(m)
    })
    if (key) tails.set(key, run)
    inflight.add(run)
    void run.finally(() => {
      inflight.delete(run)
      if (key && tails.get(key) === run) tails.delete(key)
    })
  }

  const options: SubscriberOptions = {
    ...subscriberOptions,
    flowControl: subscriberOptions?.flowControl ?? {
      maxMessages: concurrency,
      allowExcessMessages: false,
    },
    // The client's default is to nack what is in flight at once; wait for the handlers instead.
    closeOptions: subscriberOptions?.closeOptions ?? {
      behavior: 'WAIT',
      timeout: Duration.from({ milliseconds: closeTimeout }),
    },
  }
  const subs: Subscription[] = names.map((name) => {
    const sub = client.subscription(name, options)
    sub.on('message', (m: Message) => onMessage(m, `//pubsub.googleapis.com/${sub.name}`))
    sub.on('error', (e: Error) => onError(new Error(`${sub.name}: ${e.message}`, { cause: e })))
    return sub
  })

  let closed: Promise<void> | undefined
  const close = (): Promise<void> => {
    closed ??= (async () => {
      const deadline = Date.now() + closeTimeout
      await Promise.all(subs.map((s) => s.close()))
      // The client stopped waiting at the timeout (and nacked what was left); so do we.
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        Promise.allSettled([...inflight]),
        new Promise((resolve) => {
          timer = setTimeout(resolve, Math.max(0, deadline - Date.now()))
        }),
      ])
      clearTimeout(timer)
    })()
    return closed
  }
  container.onClose(close)

  return {
    subscriptions: subs.map((s) => s.name),
    stats: () => ({ ...counts, inflight: inflight.size }),
    close,
  }
}
