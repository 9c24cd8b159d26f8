import { unsubscribe } from './_internal.js'
import { compose, type Middleware } from './compose.js'
import type { Emit, EventContext } from './event-context.js'
import type { HandlerStats, Metrics } from './metrics.js'
import { compileGlob, Router } from './router.js'
import type { BatchOptions, HandlerOptions, PayloadOf, Unsubscribe } from './types.js'

/** A filter: the handler runs only when every filter returns true. A throwing filter counts as false. */
export type Filter<C = EventContext> = (ctx: C) => boolean | Promise<boolean>

/** A handler function. */
export type Handler<C = EventContext> = (ctx: C) => unknown

/** A batch handler (`on(pattern, { batch: { size, wait } }, handler)`): the events' contexts. */
export type BatchHandler<C = EventContext> = (ctxs: C[]) => unknown

/** Options of a per-event handler (`batch` makes a batch handler: see {@link On}). */
type EventHandlerOptions = HandlerOptions & { readonly batch?: undefined }

declare const FILTER_TAG: unique symbol
/** What `when(...)` returns: a filter for `on(...)`, usable as a method decorator too. */
export interface WhenFilter<C = EventContext> {
  (method: unknown, context: ClassMethodDecoratorContext): void
  readonly [FILTER_TAG]: Filter<C>
}

/** A standard (TC39) method decorator, as returned by `on(pattern)` without a handler. */
export type MethodDecorator = (method: unknown, context: ClassMethodDecoratorContext) => void

type Ctx<E, T> = EventContext<PayloadOf<E, T>>

/** `on`: register a handler (patterns, filters, options, function) or decorate a method. */
export interface On<E> {
  // Per-event handlers come first and exclude `batch`: a batch call fails them on its options,
  // before its handler's parameter is typed, and reaches the batch overload.
  <const T extends string>(
    pattern: T | readonly T[],
    ...rest: [...(WhenFilter<Ctx<E, T>> | EventHandlerOptions)[], Handler<Ctx<E, T>>]
  ): Unsubscribe
  /** A batch handler: called with the contexts of up to `batch.size` events at once. */
  <const T extends string>(
    pattern: T | readonly T[],
    ...rest: [
      ...WhenFilter<Ctx<E, T>>[],
      HandlerOptions & { readonly batch: BatchOptions },
      BatchHandler<Ctx<E, T>>,
    ]
  ): Unsubscribe
  (...args: [...(string | readonly string[] | WhenFilter | HandlerOptions)[], Handler]): Unsubscribe
  (...patterns: (string | readonly string[] | HandlerOptions)[]): MethodDecorator
}

/** What `container.handlers()` hands out. */
export interface Handlers<E> {
  readonly on: On<E>
  readonly when: <C = EventContext>(filter: Filter<C>) => WhenFilter<C>
  readonly middleware: (fn: Middleware<EventContext>) => Unsubscribe
  readonly emit: Emit<E>
}

/** A registered handler, as the dispatcher runs it. */
export interface HandlerEntry {
  readonly name: string
  readonly stats: HandlerStats
  /** No retry policy and no timeout: one attempt, called inline. */
  readonly simple: boolean
  readonly fn: Handler
  readonly filters: readonly Filter[]
  readonly options: HandlerOptions
}

/**
 * Turns a batch handler into the per-event handler registered for it (the container's batch
 * feature: each event joins the open batch and waits for it).
 */
export type BatchWrapper = (
  name: string,
  batch: BatchOptions,
  timeout: number | undefined,
  fn: BatchHandler,
) => Handler

const FILTER: unique symbol = Symbol.for('substate.filter') as never
const ROUTES = Symbol.for('substate.routes')
const FILTERS = Symbol.for('substate.filters')

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !(FILTER in v)

/** Parses `on`'s variadic arguments: patterns, then filters and options, then the handler. */
export function parseOn(args: unknown[]): {
  patterns: string[]
  filters: Filter[]
  options: HandlerOptions
  fn: Handler | undefined
} {
  const patterns: string[] = []
  const filters: Filter[] = []
  let options: HandlerOptions = {}
  let fn: Handler | undefined
  args.forEach((a, i) => {
    if (typeof a === 'string') patterns.push(a)
    else if (Array.isArray(a)) patterns.push(...(a as string[]))
    else if (typeof a === 'function' && FILTER in a)
      filters.push((a as unknown as Record<symbol, Filter>)[FILTER]!)
    else if (typeof a === 'function' && i === args.length - 1) fn = a as Handler
    else if (isPlainObject(a)) options = { ...options, ...(a as HandlerOptions) }
    else
      throw new TypeError(
        `on(): unexpected argument #${i + 1} (${typeof a}); expected patterns, when(...) filters, options, then the handler`,
      )
  })
  if (patterns.length === 0)
    throw new TypeError('on(): at least one event type pattern is required')
  for (const p of patterns) compileGlob(p)
  return { patterns, filters, options, fn }
}

/** The handlers and middleware of a container: `on`, `when`, `middleware`, `register`. */
export class HandlerRegistry {
  readonly router: Router<HandlerEntry> = new Router<HandlerEntry>()
  readonly #middleware: Middleware<EventContext>[] = []
  #chain: ((ctx: EventContext) => Promise<void>) | undefined
  readonly #metrics: Metrics
  readonly #wrapBatch: BatchWrapper
  #anonymous = 0

  constructor(metrics: Metrics, wrapBatch: BatchWrapper) {
    this.#metrics = metrics
    this.#wrapBatch = wrapBatch
  }

  /** True when middleware is registered. */
  get hasMiddleware(): boolean {
    return this.#middleware.length > 0
  }

  /** The middleware composed around `inner` (made once per change of the middleware list). */
  chain(inner: (ctx: EventContext) => Promise<void>): (ctx: EventContext) => Promise<void> {
    this.#chain ??= compose(this.#middleware, inner)
    return this.#chain
  }

  readonly on: On<unknown> = ((...args: unknown[]) => {
    const { patterns, filters, options, fn } = parseOn(args)
    if (fn === undefined) return this.#decorator(patterns, options)
    return this.#add(patterns, filters, options, fn)
  }) as On<unknown>

  readonly when = <C = EventContext>(predicate: Filter<C>): WhenFilter<C> => {
    if (typeof predicate !== 'function')
      throw new TypeError('when() takes a function (ctx) => boolean')
    const decorator = (method: unknown, context: ClassMethodDecoratorContext): void => {
      if (context?.kind !== 'method') throw new TypeError('@when decorates methods only')
      const tagged = method as Record<symbol, Filter<C>[]>
      tagged[FILTERS] ??= []
      tagged[FILTERS].unshift(predicate) // decorators apply bottom-up; keep reading order
    }
    return Object.assign(decorator, { [FILTER]: predicate }) as unknown as WhenFilter<C>
  }

  readonly middleware = (fn: Middleware<EventContext>): Unsubscribe => {
    if (typeof fn !== 'function')
      throw new TypeError('middleware() takes a function (ctx, next) => Promise<void>')
    this.#middleware.push(fn)
    this.#chain = undefined
    return unsubscribe(() => {
      const i = this.#middleware.indexOf(fn)
      if (i >= 0) this.#middleware.splice(i, 1)
      this.#chain = undefined
    })
  }

  /**
   * `on(patterns)` without a handler: a method decorator. A decorator is applied while its class
   * is defined, in the same turn; one still unapplied a turn later most likely stands for a
   * forgotten handler (`on('order.created')` as a statement), which would register nothing:
   * a process warning (`SUBSTATE_ON_WITHOUT_HANDLER`) says so.
   */
  #decorator(patterns: string[], options: HandlerOptions): MethodDecorator {
    let applied = false
    setTimeout(() => {
      if (applied) return
      process.emitWarning(
        `on(${patterns.map((p) => JSON.stringify(p)).join(', ')}) was called without a handler and its decorator was never applied to a method: nothing was registered (pass the handler as the last argument)`,
        { code: 'SUBSTATE_ON_WITHOUT_HANDLER' },
      )
    }, 0).unref?.()
    return (method, context) => {
      applied = true
      if (context?.kind !== 'method') throw new TypeError('@on decorates methods only')
      const tagged = method as Record<symbol, unknown[]>
      tagged[ROUTES] ??= []
      tagged[ROUTES].push({ patterns, options: { name: String(context.name), ...options } })
    }
  }

  register(instance: object): Unsubscribe {
    const offs: Unsubscribe[] = []
    const seen = new Set<string | symbol>()
    for (
      let proto = Object.getPrototypeOf(instance);
      proto && proto !== Object.prototype;
      proto = Object.getPrototypeOf(proto)
    ) {
      for (const key of Reflect.ownKeys(proto)) {
        if (seen.has(key)) continue
        seen.add(key)
        const method = Object.getOwnPropertyDescriptor(proto, key)?.value as
          | Record<symbol, unknown>
          | undefined
        const routes = method?.[ROUTES] as
          | Array<{ patterns: string[]; options: HandlerOptions }>
          | undefined
        if (!routes) continue
        const filters = ((method![FILTERS] as Filter[] | undefined) ?? []).map((f) =>
          f.bind(instance),
        )
        const fn = (method as unknown as Handler).bind(instance)
        for (const r of routes) {
          const name = `${instance.constructor.name}.${r.options.name ?? String(key)}`
          offs.push(this.#add(r.patterns, filters, { ...r.options, name }, fn))
        }
      }
    }
    if (offs.length === 0)
      throw new TypeError(`register(): ${instance.constructor.name} has no @on methods`)
    return unsubscribe(() => {
      for (const off of offs) off()
    })
  }

  #add(patterns: string[], filters: Filter[], options: HandlerOptions, fn: Handler): Unsubscribe {
    const name = options.name ?? (fn.name || `handler#${++this.#anonymous}`)
    if (options.retry && !(options.retry.attempts >= 1))
      throw new TypeError(`${name}: retry.attempts must be >= 1`)
    if (options.batch !== undefined)
      fn = this.#wrapBatch(name, options.batch, options.timeout, fn as unknown as BatchHandler)
    const simple = options.retry === undefined && options.timeout === undefined
    const entry = { name, stats: this.#metrics.of(name), simple, fn, filters, options }
    const off = this.router.add(patterns, entry)
    const un = unsubscribe(off)
    options.signal?.addEventListener('abort', un, { once: true })
    if (options.signal?.aborted) off()
    return un
  }
}
