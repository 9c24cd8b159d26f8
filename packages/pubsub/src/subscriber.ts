import type { Message, PubSub, SubscriberOptions, Subscription } from '@google-cloud/pubsub'
import { Duration } from '@google-cloud/pubsub'
import type { Container, EventMap, Logger, ReceiveResult } from '@substate/core'
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
   * JSON it claims to be) or whose payload its schema rejects (a `ValidationError`, with
   * `createContainer({ schemas })`), after it was reported: `'ack'` drops it, `'nack'` leaves it to the
   * subscription's dead-letter policy (after `maxDeliveryAttempts` Pub/Sub moves it to the
   * dead-letter topic). Forward it somewhere first if you want to keep it.
   * @default () => 'nack'
   */
  readonly onInvalid?: (message: Message, error: Error) => 'ack' | 'nack' | Promise<'ack' | 'nack'>
  /**
   * Called with what is not already reported through `container.onError`: stream errors
   * (subscription missing, permission denied), invalid messages, and messages nacked for another
   * reason than a handler failure (storage down, shutdown).
   * @default logs through `logger`, else with console.error
   */
  readonly onError?: (error: Error, message?: Message) => void
  /**
   * A pino-style logger (`error`, `warn`, `info`, `debug`, each `(fields, message?)`): errors
   * (unless `onError` is given) and the subscriber's state, a subscription that stopped
   * delivering (`warn`) and one that delivers again (`info`).
   */
  readonly logger?: Logger
  /**
   * Backoff between attempts to reopen a subscription that stopped (deleted and recreated, an
   * emulator or network outage), in ms: the delay doubles from `min` up to `max`, with jitter.
   * The subscriber never gives up while it is not closed. `max` also caps the client's own
   * backoff between StreamingPull retries (unless `subscriberOptions.streamingOptions` sets it).
   * @default { min: 250, max: 10_000 }
   */
  readonly reconnect?: { readonly min?: number; readonly max?: number }
}

/**
 * Where a subscriber stands: `starting` until its subscriptions were first found, `consuming`
 * while every subscription can deliver, `reconnecting` while one cannot (the subscriber keeps
 * retrying; `lastError` says why), `closed` after `close()`.
 */
export type PubsubSubscriberStatus = 'starting' | 'consuming' | 'reconnecting' | 'closed'

/** {@link PubsubSubscriber.state}: the status, with the last error of a subscription that failed. */
export interface PubsubSubscriberState {
  readonly status: PubsubSubscriberStatus
  /** The last error of a subscription that is not consuming; `undefined` when all are. */
  readonly lastError?: Error
  /** The subscriptions (full paths) that are not consuming. */
  readonly failing: readonly string[]
  /** Times a subscription was reopened or found again after a failure. */
  readonly reconnects: number
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
  /** Times a subscription was reopened or found again after a failure. */
  readonly reconnects: number
}

/** A running subscriber: pulls until closed. */
export interface PubsubSubscriber {
  /** The subscriptions, as the client names them (full paths). */
  readonly subscriptions: readonly string[]
  stats(): PubsubSubscriberStats
  /** Whether it is consuming, reconnecting (and why), starting or closed. */
  state(): PubsubSubscriberState
  /**
   * True while every subscription is consuming: for a readiness check (`/readyz`), e.g.
   * `createReceiver(container, { readiness: { pubsub: () => subscriber.ready() } })`.
   */
  ready(): boolean
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
 * A subscription that stops (deleted and recreated, the emulator restarted, a network outage) is
 * reopened with backoff until it delivers again, without a restart of the process: `state()` says
 * `reconnecting` with the last error meanwhile, and `ready()` is false. Whether a subscription
 * exists is checked with `subscription.getMetadata()`; where the service account may not read
 * subscriptions (PERMISSION_DENIED) the check counts as passed and the stream decides.
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
    logger,
    onError: userOnError = logger === undefined
      ? (error, message) =>
          console.error(`[pubsub]${message ? ` message ${message.id}:` : ''} ${error.message}`)
      : (err, message) =>
          logger.error(
            { err, ...(message === undefined ? {} : { messageId: message.id }) },
            err.message,
          ),
    reconnect: { min: backoffMin = 250, max: backoffMax = 10_000 } = {},
  }: PubsubSubscriberOptions,
): PubsubSubscriber {
  if (typeof client?.subscription !== 'function')
    throw new TypeError('pubsubSubscriber(): client must be a PubSub client (new PubSub(...))')
  if (!(concurrency >= 1))
    throw new TypeError(`pubsubSubscriber(): concurrency must be >= 1, got ${concurrency}`)
  const names = typeof subscriptions === 'string' ? [subscriptions] : [...subscriptions]
  if (names.length === 0 || names.some((n) => typeof n !== 'string' || n === ''))
    throw new TypeError('pubsubSubscriber(): subscriptions must be one or more subscription names')
  if (!(backoffMin > 0 && backoffMax >= backoffMin))
    throw new TypeError('pubsubSubscriber(): reconnect needs 0 < min <= max (milliseconds)')

  // A throwing hook must not leave a message un-acked (and its ordering key stuck) or crash Node.
  const onError = (error: Error, message?: Message): void => {
    try {
      userOnError(error, message)
    } catch (hookError) {
      if (logger === undefined) console.error('[pubsub] the onError hook threw:', hookError)
      else logger.error({ err: hookError }, 'the onError hook threw')
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
    let what = 'not an event'
    try {
      const event = fromPubsubMessage(m, source)
      try {
        result = await container.receive(event)
      } catch (e) {
        // A payload its schema rejects (createContainer({ schemas })) is an invalid message.
        if (isSubstateError(e, 'VALIDATION')) {
          what = 'an invalid payload'
          throw e
        }
        if (!isSubstateError(e, 'SHUTDOWN')) onError(e as Error, m)
        return nack(m)
      }
    } catch (e) {
      // Not an event. Redelivery will not fix it, so it does not hold up its ordering key.
      counts.invalid++
      const error = e as Error
      onError(new Error(`${what}, ${error.message}`, { cause: e }), m)
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
    // The client backs off up to 60 s between stream retries: after an outage, resume sooner.
    streamingOptions: subscriberOptions?.streamingOptions ?? {
      retryMaxBackoff: Duration.from({ milliseconds: backoffMax }),
    },
    // The client's default is to nack what is in flight at once; wait for the handlers instead.
    closeOptions: subscriberOptions?.closeOptions ?? {
      behavior: 'WAIT',
      timeout: Duration.from({ milliseconds: closeTimeout }),
    },
  }
  let closing = false
  let reconnects = 0
  // Per subscription: whether it delivers, why not, and the loop that brings it back.
  interface Tracker {
    readonly sub: Subscription
    status: 'starting' | 'consuming' | 'reconnecting'
    lastError?: Error
    recovering: boolean
    /** The client finished closing a failed stream (it must not be reopened before). */
    streamClosed: boolean
    timer?: NodeJS.Timeout
    wake?: () => void
  }
  const trackers: Tracker[] = []

  const failed = (t: Tracker, error: Error): void => {
    t.lastError = error
    if (t.status === 'consuming') {
      t.status = 'reconnecting'
      logger?.warn(
        { subscription: t.sub.name, err: error },
        'pubsub subscriber: a subscription stopped delivering; reconnecting',
      )
    }
    void recover(t)
  }
  const delay = (t: Tracker, ms: number): Promise<void> =>
    new Promise((resolve) => {
      t.wake = resolve
      t.timer = setTimeout(resolve, ms)
    })
  // Until the subscription is found again: wait (backoff), check that it exists, reopen the
  // stream if the client closed it. A message arriving meanwhile proves it delivers: done.
  const recover = async (t: Tracker): Promise<void> => {
    if (t.recovering || closing) return
    t.recovering = true
    let attempt = 0
    try {
      while (!closing) {
        if (attempt > 0 || t.status !== 'starting') {
          const ms = Math.min(backoffMax, backoffMin * 2 ** Math.min(attempt, 20))
          await delay(t, ms / 2 + (Math.random() * ms) / 2)
        }
        attempt++
        if (closing) return
        if (t.status === 'consuming' && t.sub.isOpen) return
        try {
          await t.sub.getMetadata({ timeout: Math.max(1_000, backoffMax) })
        } catch (e) {
          // 7: PERMISSION_DENIED: this account may consume but not read the subscription.
          if ((e as { code?: number }).code !== 7) {
            t.lastError = e as Error
            if (t.status === 'consuming') t.status = 'reconnecting'
            continue
          }
        }
        if (closing) return
        if (!t.sub.isOpen) {
          // The client is still closing the failed stream (waiting for messages in flight).
          if (!t.streamClosed) continue
          t.streamClosed = false
          t.sub.open()
        }
        if (t.status === 'reconnecting') {
          reconnects++
          logger?.info({ subscription: t.sub.name }, 'pubsub subscriber: consuming again')
        }
        t.status = 'consuming'
        t.lastError = undefined
        return
      }
    } finally {
      t.recovering = false
    }
  }

  const subs: Subscription[] = names.map((name) => {
    const sub = client.subscription(name, options)
    const t: Tracker = { sub, status: 'starting', recovering: false, streamClosed: false }
    trackers.push(t)
    sub.on('message', (m: Message) => {
      if (t.status !== 'consuming') {
        if (t.status === 'reconnecting') {
          reconnects++
          logger?.info({ subscription: sub.name }, 'pubsub subscriber: consuming again')
        }
        t.status = 'consuming'
        t.lastError = undefined
      }
      onMessage(m, `//pubsub.googleapis.com/${sub.name}`)
    })
    sub.on('error', (e: Error) => {
      const error = new Error(`${sub.name}: ${e.message}`, { cause: e })
      onError(error)
      failed(t, error)
    })
    // The client closes a subscription whose stream failed for good (NOT_FOUND, say): reopen it.
    sub.on('close', () => {
      t.streamClosed = true
      if (!closing) failed(t, t.lastError ?? new Error(`${sub.name}: the stream closed`))
    })
    // A stream that ended with a retryable status (the server is unavailable): the client retries
    // on its own; meanwhile this subscription is not consuming.
    sub.on('debug', (d: { error?: { code?: number; message?: string } }) => {
      const code = d.error?.code
      if (code === undefined || code === 0 || code === 4) return // OK, DEADLINE_EXCEEDED: routine
      failed(t, new Error(`${sub.name}: ${d.error?.message ?? `stream ended with status ${code}`}`))
    })
    void recover(t)
    return sub
  })

  const state = (): PubsubSubscriberState => {
    if (closing) return { status: 'closed', failing: [], reconnects }
    const failing = trackers.filter((t) => t.status !== 'consuming')
    const status = failing.some((t) => t.status === 'reconnecting')
      ? 'reconnecting'
      : failing.length > 0
        ? 'starting'
        : 'consuming'
    const lastError = failing.find((t) => t.lastError)?.lastError
    return {
      status,
      failing: failing.map((t) => t.sub.name),
      reconnects,
      ...(lastError ? { lastError } : {}),
    }
  }

  let closed: Promise<void> | undefined
  const close = (): Promise<void> => {
    closing = true
    for (const t of trackers) {
      clearTimeout(t.timer)
      t.wake?.()
    }
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
    stats: () => ({ ...counts, inflight: inflight.size, reconnects }),
    state,
    ready: () => state().status === 'consuming',
    close,
  }
}
