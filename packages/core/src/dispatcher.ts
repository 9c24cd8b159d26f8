import type { Subject as RxSubject } from 'rxjs'
import { backoff } from './_internal.js'
import { type Clock, type ClockTimer, sleep } from './clock.js'
import { CascadeDepthError, TimeoutError } from './errors.js'
import { Context, type EventContext, type NestedEmitter, withSignal } from './event-context.js'
import type { EventRing } from './event-log.js'
import type { Failures } from './failures.js'
import type { HandlerEntry, HandlerRegistry } from './handlers.js'
import type { Metrics } from './metrics.js'
import type { Routes, Target } from './routes.js'
import { addFailures, NO_FAILURES, type Scope, scopes } from './scope.js'
import type { Telemetry } from './telemetry.js'
import type { EmitResult, Subject, SubstateEvent } from './types.js'

/** `DispatchRequest.value` meaning "resolve with the `EmitResult`". */
export const RESULT: unique symbol = Symbol('the emit result')

/** One event to dispatch. */
export interface DispatchRequest {
  readonly event: SubstateEvent
  readonly subject: Subject
  /** The scope the event was emitted in (undefined at the top of a cascade). */
  readonly parent: Scope | undefined
  /** Explicit remote targets (`emit(..., { dispatchUrl | topic })`): no local handlers. */
  readonly targets: Target[] | undefined
  /** Failures are not merged into the parent scope (the caller rethrows them). */
  readonly detach: boolean
  /**
   * What the dispatch resolves with: {@link RESULT} for the `EmitResult`, or any other value (a
   * subject write's result, `undefined` included), without a promise of its own to map it.
   */
  readonly value: unknown
  /** With a `value`: reject with the failures when a handler failed (not dead-lettered). */
  readonly check: boolean
}

/** What the dispatcher needs of the container's lifecycle. */
export interface WorkTracker {
  /** Aborted when the container gives up on in-flight work. */
  readonly signal: AbortSignal
  /** A top-level dispatch started. */
  enter(): void
  /** A top-level dispatch finished. */
  leave(): void
}

export interface DispatcherDeps {
  readonly maxDepth: number
  readonly handlers: HandlerRegistry
  readonly routes: Routes
  readonly failures: Failures
  readonly log: EventRing
  /** `container.events$`'s source. */
  readonly events: RxSubject<SubstateEvent>
  readonly work: WorkTracker
  /** How handler contexts emit nested events. */
  readonly emitter: NestedEmitter
  readonly metrics: Metrics
  readonly telemetry: Telemetry
  /** Times retry backoffs and handler timeouts. */
  readonly clock: Clock
}

/** The state of a dispatch that goes through middleware (kept on its context). */
interface ThroughMiddleware {
  readonly req: DispatchRequest
  readonly scope: Scope
  handled: number
}

/**
 * Runs events: each in a scope one level deeper than its caller's, middleware (once) around
 * routes and handlers, handlers one after another in registration order, with retries, timeouts
 * and dead-lettering. A failing handler does not stop the others.
 */
export class Dispatcher {
  readonly #deps: DispatcherDeps
  readonly #handlers: HandlerRegistry
  readonly #routes: Routes
  readonly #failures: Failures
  readonly #work: WorkTracker
  readonly #metrics: Metrics
  readonly #telemetry: Telemetry
  /** Tracing is on: every handler runs through `#invoke` (in a span). */
  readonly #traced: boolean
  readonly #log: EventRing
  readonly #events: RxSubject<SubstateEvent>
  /** The end of the middleware chain: routes and handlers of the context's dispatch. */
  readonly #inner = (c: EventContext): Promise<void> => {
    const through = (c as Context).through as ThroughMiddleware
    return this.#run(through.req, through.scope, c as Context, true).then(() => undefined)
  }

  constructor(deps: DispatcherDeps) {
    this.#deps = deps
    this.#handlers = deps.handlers
    this.#routes = deps.routes
    this.#failures = deps.failures
    this.#work = deps.work
    this.#metrics = deps.metrics
    this.#telemetry = deps.telemetry
    this.#traced = deps.telemetry.on
    this.#log = deps.log
    this.#events = deps.events
  }

  dispatch(req: DispatchRequest): Promise<EmitResult> {
    const parent = req.parent
    const depth = parent === undefined ? 0 : parent.depth + 1
    if (depth > this.#deps.maxDepth) {
      return Promise.reject(new CascadeDepthError(this.#deps.maxDepth, req.event.type))
    }
    const span = this.#traced ? this.#telemetry.dispatch(req.event, parent?.span, depth) : undefined
    const scope: Scope = {
      depth,
      originId: req.event.originId,
      failures: NO_FAILURES,
      unit: parent?.unit,
      span,
    }
    this.#metrics.events++
    if (parent === undefined) this.#work.enter()
    return scopes.run(scope, () => this.#start(req, scope))
  }

  /**
   * Publishes the event and runs it. Without middleware or routes, two common cases need no async
   * frame of their own: no matching handler (a property event nobody listens to), and one simple
   * handler (no filters, outside units of work, untraced), whose own promise settles the
   * dispatch: the hot path of every `set`.
   */
  #start(req: DispatchRequest, scope: Scope): Promise<EmitResult> {
    const event = req.event
    let ctx: Context
    let hs: readonly HandlerEntry[] | undefined
    try {
      // A unit's events are published once it committed (a discarded run leaves nothing behind).
      if (scope.unit === undefined) {
        this.#log.record(event)
        if (this.#events.observed) this.#events.next(event)
      } else scope.unit.events.push(event)
      ctx = new Context(this.#deps.emitter, event, req.subject, this.#work.signal)
      if (req.targets === undefined && this.#routes.size === 0 && !this.#handlers.hasMiddleware)
        hs = this.#handlers.router.match(event.type)
    } catch (e) {
      this.#done(req, scope)
      return Promise.reject(e)
    }
    if (hs?.length === 0) {
      try {
        return Promise.resolve(this.#finish(req, scope, 0))
      } catch (e) {
        return Promise.reject(e)
      }
    }
    if (
      hs?.length === 1 &&
      hs[0]!.simple &&
      hs[0]!.filters.length === 0 &&
      scope.unit === undefined &&
      !this.#traced
    )
      return this.#one(hs[0]!, ctx, req, scope)
    return this.#run(req, scope, ctx, false) as Promise<EmitResult>
  }

  /** Calls the one simple handler of an event; settles with the dispatch's result. */
  #one(h: HandlerEntry, ctx: Context, req: DispatchRequest, scope: Scope): Promise<EmitResult> {
    const started = performance.now()
    let called: unknown
    try {
      called = h.fn(ctx)
    } catch (e) {
      called = Promise.reject(e)
    }
    // A native promise is used as it is (no promise of its own; a value is wrapped).
    return Promise.resolve(called).then(
      () => {
        h.stats.ok(performance.now() - started)
        return this.#finish(req, scope, 1)
      },
      (e: unknown) => {
        h.stats.fail(performance.now() - started)
        return this.#failures.exhausted(h.name, req.event, scope, e, 1).then(
          () => this.#finish(req, scope, 1),
          (f: unknown) => {
            this.#done(req, scope)
            throw f
          },
        )
      },
    )
  }

  /** The result of a dispatch that ran its handlers; its end either way. */
  #finish(req: DispatchRequest, scope: Scope, handled: number): EmitResult {
    try {
      return this.#result(req, scope, handled)
    } finally {
      this.#done(req, scope)
    }
  }

  /** The end of a dispatch: the container's count of work in flight, the dispatch's span. */
  #done(req: DispatchRequest, scope: Scope): void {
    if (req.parent === undefined) this.#work.leave()
    if (scope.span !== undefined) this.#endDispatch(scope)
  }

  /**
   * Runs an event's middleware (once) around its routes and handlers (`inner` false), or, called
   * back from the end of the middleware chain (`inner` true), its routes and handlers only. So
   * the handler loop exists once, and an event without middleware runs it in this one async
   * frame.
   */
  async #run(
    req: DispatchRequest,
    scope: Scope,
    ctx: Context,
    inner: boolean,
  ): Promise<EmitResult | undefined> {
    const event = req.event
    try {
      if (!inner && this.#handlers.hasMiddleware) {
        return this.#result(req, scope, await this.#throughMiddleware(ctx, req, scope))
      }
      let handled = 0
      // Explicit targets go remote only; routes add targets, and local handlers still run unless
      // every matching route is 'direct'.
      let local = req.targets === undefined
      if (!local || this.#routes.size > 0) local = await this.#routes.send(ctx, scope, req.targets)
      if (local) {
        for (const h of this.#handlers.router.match(event.type)) {
          if (h.filters.length > 0) {
            const pass = this.#passes(h, ctx)
            if (!(pass === true || (pass !== false && (await pass)))) continue
          }
          handled++
          if (h.simple && !this.#traced) {
            // No retry policy and no timeout: called inline. In a unit of work, a failed run
            // leaves nothing: its writes, events and sends are undone.
            const mark = scope.unit?.mark()
            const started = performance.now()
            try {
              await h.fn(ctx)
              h.stats.ok(performance.now() - started)
            } catch (e) {
              if (mark !== undefined) scope.unit!.rollback(mark)
              h.stats.fail(performance.now() - started)
              await this.#failures.exhausted(h.name, event, scope, e, 1)
            }
          } else await this.#invoke(h, ctx, scope)
        }
      }
      if (!inner) return this.#result(req, scope, handled)
      ;(ctx.through as ThroughMiddleware).handled = handled
      return undefined
    } finally {
      if (!inner) this.#done(req, scope)
    }
  }

  #endDispatch(scope: Scope): void {
    const span = scope.span!
    span.setAttribute('substate.failures', scope.failures.length)
    this.#telemetry.end(span, scope.failures.find((f) => !f.deadLettered)?.error)
  }

  async #throughMiddleware(ctx: Context, req: DispatchRequest, scope: Scope): Promise<number> {
    const through: ThroughMiddleware = { req, scope, handled: 0 }
    ctx.through = through
    try {
      await this.#handlers.chain(this.#inner)(ctx)
    } catch (e) {
      this.#failures.fail(scope, 'middleware', req.event, e, 1, false, false)
    }
    return through.handled
  }

  /** The end of a dispatch: failures merged into the parent scope, what it resolves with. */
  #result(req: DispatchRequest, scope: Scope, handled: number): EmitResult {
    const { event, parent } = req
    const failures = scope.failures
    let ok = true
    if (failures.length > 0) {
      if (parent !== undefined && !req.detach) addFailures(parent, failures)
      for (const f of failures) if (!f.deadLettered) ok = false
    }
    if (req.value === RESULT) return { event, handled, failures: [...failures], ok }
    if (req.check && !ok) throw this.#failures.aggregate({ event, handled, failures, ok })
    return req.value as EmitResult
  }

  /** All filters pass; sync filters stay sync. A throwing filter counts as false and is reported. */
  #passes(h: HandlerEntry, ctx: EventContext): boolean | Promise<boolean> {
    for (let i = 0; i < h.filters.length; i++) {
      let r: boolean | Promise<boolean>
      try {
        r = h.filters[i]!(ctx)
      } catch (e) {
        this.#failures.report(`filter:${h.name}`, ctx.event, e)
        return false
      }
      if (r instanceof Promise) return this.#passesAsync(h, ctx, i, r)
      if (!r) return false
    }
    return true
  }

  async #passesAsync(
    h: HandlerEntry,
    ctx: EventContext,
    i: number,
    first: Promise<boolean>,
  ): Promise<boolean> {
    try {
      if (!(await first)) return false
      for (let j = i + 1; j < h.filters.length; j++) if (!(await h.filters[j]!(ctx))) return false
      return true
    } catch (e) {
      this.#failures.report(`filter:${h.name}`, ctx.event, e)
      return false
    }
  }

  /** A handler with a retry policy or a timeout. */
  async #invoke(h: HandlerEntry, ctx: EventContext, scope: Scope): Promise<void> {
    const { retry } = h.options
    const attempts = retry?.attempts ?? 1
    const signal = this.#work.signal
    const unit = scope.unit
    // Traced: the handler's span is the parent of what it emits while it runs.
    const parent = scope.span
    const span = this.#traced ? this.#telemetry.handler(h.stats.name, ctx.event, parent) : undefined
    if (span !== undefined) scope.span = span
    try {
      for (let attempt = 1; ; attempt++) {
        const started = performance.now()
        // In a unit, a failed attempt leaves nothing: its writes, events and sends are undone.
        const mark = unit?.mark()
        try {
          if (span !== undefined) await this.#telemetry.within(span, () => this.#call(h, ctx))
          else await this.#call(h, ctx)
          h.stats.ok(performance.now() - started)
          if (span !== undefined) this.#telemetry.end(span)
          return
        } catch (e) {
          if (mark !== undefined) unit!.rollback(mark)
          if (attempt < attempts && !signal.aborted) {
            h.stats.retry(performance.now() - started)
            span?.addEvent('retry', retryAttributes(attempt, e))
            await sleep(this.#deps.clock, backoff(retry, attempt), signal)
            continue
          }
          h.stats.fail(performance.now() - started)
          if (span !== undefined) {
            span.setAttribute('substate.attempts', attempt)
            this.#telemetry.end(span, e)
          }
          return this.#failures.exhausted(h.name, ctx.event, scope, e, attempt)
        }
      }
    } finally {
      if (span !== undefined) scope.span = parent
    }
  }

  #call(h: HandlerEntry, ctx: EventContext): unknown {
    const timeout = h.options.timeout
    return timeout === undefined ? h.fn(ctx) : this.#withTimeout(h, ctx, timeout)
  }

  async #withTimeout(h: HandlerEntry, ctx: EventContext, ms: number): Promise<void> {
    const ac = new AbortController()
    const signal = AbortSignal.any([this.#work.signal, ac.signal])
    const clock = this.#deps.clock
    let timer: ClockTimer | undefined
    const timedOut = new Promise<never>((_, reject) => {
      timer = clock.setTimeout(() => {
        const err = new TimeoutError(`handler ${h.name}`, ms)
        ac.abort(err)
        reject(err)
      }, ms)
    })
    try {
      await Promise.race([h.fn(withSignal(ctx, signal)), timedOut])
    } finally {
      clock.clearTimeout(timer)
    }
  }
}

/** A retry, as an event of the handler's span. */
function retryAttributes(attempt: number, e: unknown): Record<string, string | number> {
  return {
    'substate.attempt': attempt,
    'exception.message': e instanceof Error ? e.message : String(e),
  }
}
