import { compileGlob } from '../router.js'
import type { OutboundEmitter, OutboundMeta, Subject, SubstateEvent } from '../types.js'

/** One delivery a {@link FakeEmitter} took (or failed on purpose). */
export interface SentMessage {
  /** The emitter's name; for an explicit target, the URL or topic. */
  readonly emitter: string
  readonly event: SubstateEvent
  readonly subject: string
  /** Transport headers from route interceptors. */
  readonly headers: Readonly<Record<string, string>>
  /** Which delivery of this event id to this emitter it was (1 first; more: re-sent). */
  readonly attempt: number
}

/** Options of {@link fakeEmitter}. */
export interface FakeEmitterOptions {
  /** The emitter's name (the outbox keys a route's messages on it). @default 'fake' */
  readonly name?: string
  /**
   * Deliveries to fail (rejected, as a receiver that is down): the first `n`, or those for which
   * the function returns true. A failed delivery stays in the outbox and is sent again.
   * @default none
   */
  readonly fail?: number | ((message: SentMessage) => boolean)
}

/**
 * An {@link OutboundEmitter} that keeps what it is sent instead of sending it: route events to it
 * (`container.route('invoice.*', outbound)`) or hand its `targets` to `createContainer` for
 * `emit(..., { dispatchUrl | topic })`, then assert on `sent`.
 */
export interface FakeEmitter extends OutboundEmitter {
  /** The deliveries it took, oldest first. */
  readonly sent: readonly SentMessage[]
  /** The deliveries it failed on purpose (`fail`), oldest first. */
  readonly failed: readonly SentMessage[]
  /** Factories for `createContainer({ targets })`: their emitters record here too. */
  readonly targets: {
    readonly dispatchUrl: (url: string) => OutboundEmitter
    readonly topic: (topic: string) => OutboundEmitter
  }
  /** Whether the container closed it. */
  readonly closed: boolean
  /** The types of the events it took, in order. */
  types(): string[]
  /** The deliveries it took whose event type matches a glob. */
  of(pattern: string): SentMessage[]
  /** Forgets what it took and failed (the `fail` count goes on). */
  clear(): void
}

/** Observers of every fake delivery (`runUnit` collects a unit's sends). */
const observers = new Set<(message: SentMessage) => void>()

/** Calls `fn` with every delivery a fake emitter takes until the returned function is called. */
export function observeSends(fn: (message: SentMessage) => void): () => void {
  observers.add(fn)
  return () => observers.delete(fn)
}

/**
 * A fake outbound emitter for tests; see {@link FakeEmitter}.
 *
 * @example
 * const billing = fakeEmitter({ name: 'billing', fail: 1 })
 * container.route('invoice.*', billing)
 * // ... the first delivery fails; the outbox sends it again later
 * expect(billing.sent.map((m) => m.attempt)).toEqual([2])
 */
export function fakeEmitter({ name = 'fake', fail }: FakeEmitterOptions = {}): FakeEmitter {
  if (typeof name !== 'string' || name === '')
    throw new TypeError('fakeEmitter(): name must be a non-empty string')
  if (fail !== undefined && typeof fail !== 'function' && !(Number.isInteger(fail) && fail >= 0))
    throw new TypeError(`fakeEmitter(): fail must be a count >= 0 or a function, got ${fail}`)
  const sent: SentMessage[] = []
  const failed: SentMessage[] = []
  const attempts = new Map<string, number>()
  let toFail = typeof fail === 'number' ? fail : 0
  let closed = false

  const deliver = (
    emitter: string,
    event: SubstateEvent,
    subject: Subject,
    meta: OutboundMeta | undefined,
  ): Promise<void> => {
    if (closed) return Promise.reject(new Error(`fake emitter ${emitter} is closed`))
    const key = `${emitter}\n${event.source}\n${event.id}`
    const attempt = (attempts.get(key) ?? 0) + 1
    attempts.set(key, attempt)
    const message: SentMessage = {
      emitter,
      event,
      subject: subject.name,
      headers: { ...meta?.headers },
      attempt,
    }
    const fails = typeof fail === 'function' ? fail(message) : toFail > 0 && toFail-- > 0
    if (fails) {
      failed.push(message)
      return Promise.reject(
        new Error(
          `fake emitter ${emitter}: delivery ${attempt} of ${event.type} failed (fail option)`,
        ),
      )
    }
    sent.push(message)
    for (const observe of observers) observe(message)
    return Promise.resolve()
  }
  const targetEmitter = (target: string): OutboundEmitter => ({
    name: target,
    send: (event, subject, meta) => deliver(target, event, subject, meta),
  })

  return {
    name,
    sent,
    failed,
    targets: { dispatchUrl: targetEmitter, topic: targetEmitter },
    get closed() {
      return closed
    },
    send: (event, subject, meta) => deliver(name, event, subject, meta),
    async close() {
      closed = true
    },
    types: () => sent.map((m) => m.event.type),
    of: (pattern) => {
      const match = compileGlob(pattern)
      return sent.filter((m) => match(m.event.type))
    },
    clear() {
      sent.length = 0
      failed.length = 0
    },
  }
}
