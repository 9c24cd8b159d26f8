import { unsubscribe } from './_internal.js'
import { compose } from './compose.js'
import type { EmitOptions, EventContext } from './event-context.js'
import { EXTENSION_NAME, RESERVED_EXTENSIONS } from './extensions.js'
import type { Failures } from './failures.js'
import type { Metrics } from './metrics.js'
import { Router } from './router.js'
import type { Scope } from './scope.js'
import { type SpanLike, type Telemetry, traceContext } from './telemetry.js'
import type { OutboundEmitter, Subject, SubstateEvent, Unsubscribe } from './types.js'
import { type OutboxTarget, outboxMessage, type UnitState } from './unit-state.js'

/** Options of `container.route`. */
export interface RouteOptions {
  /** `direct`: only the remote target; `both`: the target and local handlers. @default 'both' */
  readonly policy?: 'direct' | 'both'
  /**
   * Interceptors around each delivery of this route, first outermost: they may add CloudEvents
   * extension attributes or transport headers, observe the delivery (after `await next()`), or
   * skip it (not calling `next`).
   */
  readonly intercept?: Interceptor | readonly Interceptor[]
}

/** One outbound delivery, as route interceptors see it. */
export interface Envelope {
  readonly event: SubstateEvent
  readonly subject: Subject
  /**
   * CloudEvents extension attributes to add (`ce-` headers over HTTP, `ce-` attributes on
   * Pub/Sub): lower-case letters and digits, values strings, numbers or booleans.
   */
  readonly extensions: Record<string, string | number | boolean>
  /** Transport metadata: HTTP request headers, Pub/Sub message attributes. */
  readonly headers: Record<string, string>
}

/** An envelope interceptor of a route: `(envelope, next) => ...`; see {@link RouteOptions}. */
export type Interceptor = (envelope: Envelope, next: () => Promise<void>) => Promise<void> | void

/** The transports a container makes emitters with, for `emit(..., { dispatchUrl | topic })`. */
export interface TargetFactories {
  readonly dispatchUrl?: (url: string) => OutboundEmitter
  readonly topic?: (topic: string) => OutboundEmitter
}

interface RouteEntry {
  readonly emitter: OutboundEmitter
  readonly direct: boolean
  /** Delivers through the route's interceptors (or straight to the emitter). */
  readonly send: (event: SubstateEvent, subject: Subject) => Promise<void>
}

/** An HTTP header name (an RFC 9110 token). */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/

/** Why an interceptor's extensions or headers cannot go out, or undefined when they can. */
export function envelopeProblem(
  extensions: Readonly<Record<string, unknown>>,
  headers: Readonly<Record<string, unknown>>,
): string | undefined {
  for (const [name, v] of Object.entries(extensions)) {
    if (!EXTENSION_NAME.test(name) || RESERVED_EXTENSIONS.has(name))
      return `the extension name ${JSON.stringify(name)} (lower-case letters and digits, not a context attribute)`
    if (!(typeof v === 'string' || typeof v === 'boolean' || Number.isInteger(v)))
      return `the value of extension ${name} (a string, an integer or a boolean)`
  }
  for (const [name, v] of Object.entries(headers)) {
    const lower = name.toLowerCase()
    if (!HEADER_NAME.test(name) || lower.startsWith('ce-') || lower === 'content-type')
      return `the header ${JSON.stringify(name)} (a token; ce-* and content-type belong to the CloudEvent: use extensions)`
    if (typeof v !== 'string' || /[\r\n\0]/.test(v))
      return `the value of header ${name} (a string on one line)`
  }
  return undefined
}

/** `emitter.send` behind route interceptors. */
function intercepted(
  emitter: OutboundEmitter,
  interceptors: readonly Interceptor[],
): (event: SubstateEvent, subject: Subject) => Promise<void> {
  for (const i of interceptors)
    if (typeof i !== 'function')
      throw new TypeError('route(): intercept takes functions (envelope, next) => ...')
  const chain = compose<Envelope>(interceptors, ({ event, subject, extensions, headers }) => {
    const problem = envelopeProblem(extensions, headers)
    if (problem !== undefined)
      throw new TypeError(`route(): an interceptor set an invalid envelope field: ${problem}`)
    const names = Object.keys(extensions)
    const out =
      names.length === 0 ? event : { ...event, extensions: { ...event.extensions, ...extensions } }
    return emitter.send(out, subject, Object.keys(headers).length === 0 ? undefined : { headers })
  })
  return (event, subject) => chain({ event, subject, extensions: {}, headers: {} })
}

/** An explicit target of `emit(..., { dispatchUrl | topic })`: its emitter and its name. */
export interface Target {
  readonly emitter: OutboundEmitter
  readonly target: OutboxTarget
}

/** Holds a send in a unit of work, with its outbox message, until the unit committed. */
function hold(
  unit: UnitState,
  target: OutboxTarget,
  emitter: OutboundEmitter,
  ctx: EventContext,
  send: () => Promise<void>,
): void {
  unit.sends.push({
    send,
    target,
    event: ctx.event,
    emitter,
    message: outboxMessage(target, ctx.event),
  })
}

/**
 * Outbound delivery: the routes (`container.route`), the emitters made for explicit targets
 * (`emit(..., { dispatchUrl | topic })`), and every emitter the container flushes and closes.
 */
export class Routes {
  readonly #router = new Router<RouteEntry>()
  /** Every emitter routed to or made for a target: flushed and closed with the container. */
  readonly emitters: Set<OutboundEmitter> = new Set()
  readonly #byTarget = new Map<string, OutboundEmitter>()
  readonly #factories: TargetFactories | undefined
  readonly #failures: Failures
  readonly #metrics: Metrics | undefined
  readonly #telemetry: Telemetry | undefined

  constructor(
    factories: TargetFactories | undefined,
    failures: Failures,
    observe?: { readonly metrics: Metrics; readonly telemetry: Telemetry },
  ) {
    this.#factories = factories
    this.#failures = failures
    this.#metrics = observe?.metrics
    this.#telemetry = observe?.telemetry?.on ? observe.telemetry : undefined
  }

  /**
   * One outbound delivery, timed, and with tracing on in a `send` span whose trace context goes
   * out in the event's `traceparent`/`tracestate` extensions (CloudEvents Distributed Tracing).
   */
  async #deliver(
    name: string,
    send: (e: SubstateEvent, s: Subject) => Promise<void>,
    event: SubstateEvent,
    subject: Subject,
    parent: SpanLike | undefined,
  ): Promise<void> {
    const started = performance.now()
    const telemetry = this.#telemetry
    const span = telemetry?.send(event, name, parent)
    try {
      if (span === undefined) await send(event, subject)
      else
        await send(
          { ...event, extensions: { ...event.extensions, ...traceContext(span) } },
          subject,
        )
      if (span !== undefined) telemetry!.end(span)
    } catch (e) {
      if (span !== undefined) telemetry!.end(span, e)
      throw e
    } finally {
      this.#metrics?.sends.observe((performance.now() - started) / 1000)
    }
  }

  /** Routes registered. */
  get size(): number {
    return this.#router.size
  }

  route(
    pattern: string | readonly string[],
    emitter: OutboundEmitter,
    options?: RouteOptions,
  ): Unsubscribe {
    if (typeof emitter?.send !== 'function')
      throw new TypeError('route(): the emitter must have send(event, subject)')
    const intercept = options?.intercept
    const interceptors =
      intercept === undefined ? [] : typeof intercept === 'function' ? [intercept] : [...intercept]
    const send =
      interceptors.length === 0
        ? (event: SubstateEvent, subject: Subject) => emitter.send(event, subject)
        : intercepted(emitter, interceptors)
    this.emitters.add(emitter)
    const patterns = typeof pattern === 'string' ? [pattern] : [...pattern]
    return unsubscribe(
      this.#router.add(patterns, { emitter, direct: options?.policy === 'direct', send }),
    )
  }

  /**
   * Sends an event out: to `targets` when given (remote only), else through the matching routes.
   * Resolves whether local handlers run too (not when every matching route is `direct`). In a
   * unit of work the sends are held by the unit (sent once it committed, from its outbox).
   */
  async send(ctx: EventContext, scope: Scope, targets: Target[] | undefined): Promise<boolean> {
    const unit = scope.unit
    if (targets !== undefined) {
      for (const { emitter, target } of targets) {
        const send = (e: SubstateEvent, s: Subject) => emitter.send(e, s)
        const span = scope.span
        if (unit !== undefined) {
          hold(unit, target, emitter, ctx, () =>
            this.#deliver(emitter.name, send, ctx.event, ctx.subject, span),
          )
          continue
        }
        try {
          await this.#deliver(emitter.name, send, ctx.event, ctx.subject, span)
        } catch (e) {
          this.#failures.fail(scope, `route:${emitter.name}`, ctx.event, e, 1, false, false)
        }
      }
      return false
    }
    const routes = this.#router.match(ctx.type)
    const local = routes.length === 0 || !routes.every((r) => r.direct)
    const span = scope.span
    for (const route of routes) {
      const name = route.emitter.name
      if (unit !== undefined) {
        const send = () => this.#deliver(name, route.send, ctx.event, ctx.subject, span)
        hold(unit, { route: name }, route.emitter, ctx, send)
        continue
      }
      try {
        await this.#deliver(name, route.send, ctx.event, ctx.subject, span)
      } catch (e) {
        this.#failures.fail(scope, `route:${route.emitter.name}`, ctx.event, e, 1, false, false)
      }
    }
    return local
  }

  /** The emitters of an emit's explicit targets, or undefined (misuse throws synchronously). */
  targetsFor(options: EmitOptions | undefined): Target[] | undefined {
    if (options?.dispatchUrl === undefined && options?.topic === undefined) return undefined
    const out: Target[] = []
    if (options.dispatchUrl !== undefined) {
      out.push({
        emitter: this.#target('dispatchUrl', options.dispatchUrl, 'httpEmitter({ url })'),
        target: { kind: 'dispatchUrl', target: options.dispatchUrl },
      })
    }
    if (options.topic !== undefined) {
      out.push({
        emitter: this.#target('topic', options.topic, 'pubsubPublisher({ client, topic })'),
        target: { kind: 'topic', target: options.topic },
      })
    }
    return out
  }

  /**
   * The delivery of an outbox message in this process: its route (by emitter name, among those
   * matching the event's type) or its target; undefined when this process has neither.
   */
  resolve(
    target: OutboxTarget,
    event: SubstateEvent,
  ): ((e: SubstateEvent, s: Subject) => Promise<void>) | undefined {
    if ('route' in target) {
      const route = this.#router.match(event.type).find((r) => r.emitter.name === target.route)
      if (route === undefined) return undefined
      return (e, s) => this.#deliver(target.route, route.send, e, s, undefined)
    }
    try {
      const emitter = this.#target(target.kind, target.target, 'a target factory')
      const send = (e: SubstateEvent, s: Subject) => emitter.send(e, s)
      return (e, s) => this.#deliver(emitter.name, send, e, s, undefined)
    } catch {
      return undefined
    }
  }

  /** One emitter per target (URL, topic), made on first use and closed with the container. */
  #target(kind: 'dispatchUrl' | 'topic', target: string, hint: string): OutboundEmitter {
    const key = `${kind}\n${target}`
    let emitter = this.#byTarget.get(key)
    if (emitter === undefined) {
      const make = this.#factories?.[kind]
      if (!make) {
        throw new TypeError(
          `emit(..., { ${kind} }) needs createContainer({ targets: { ${kind}: (${kind === 'topic' ? 'topic' : 'url'}) => ${hint} } })`,
        )
      }
      emitter = make(target)
      this.#byTarget.set(key, emitter)
      this.emitters.add(emitter)
    }
    return emitter
  }
}
