import { randomUUID } from 'node:crypto'
import { filter, type Observable, Subject as RxSubject } from 'rxjs'
import { RecentKeys } from './_internal.js'
import { compose, type Middleware } from './compose.js'
import { CascadeDepthError, HandlerError, ShutdownError, TimeoutError } from './errors.js'
import { type EventLog, EventRing } from './event-log.js'
import { EXTENSION_NAME, RESERVED_EXTENSIONS } from './extensions.js'
import { copyJson, type JsonValue } from './json.js'
import { KeyedQueue } from './keyed-queue.js'
import { createMemoryStorage } from './memory-storage.js'
import { type HandlerStats, Metrics, type MetricsSnapshot } from './metrics.js'
import { compileGlob, Router } from './router.js'
import { nextTick, type ScheduleSpec } from './schedule.js'
import { type Scope, scopes, type UnitOfWork } from './scope.js'
import type { StorageProvider, SubjectStorage } from './storage.js'
import { type SubjectHost, SubjectState } from './subject.js'
import { TIMER_SOURCE, TIMERS, type TimerOptions, Timers } from './timers.js'
import type {
  BatchOptions,
  DeadLetterSink,
  EmitResult,
  EventMap,
  HandlerFailure,
  HandlerOptions,
  OutboundEmitter,
  PayloadOf,
  Subject,
  SubstateEvent,
} from './types.js'

/** The context a handler, filter and middleware receive: one object per event. */
export interface EventContext<P = unknown> {
  readonly type: string
  readonly id: string
  readonly subject: Subject
  readonly payload: P
  readonly extra: Readonly<Record<string, unknown>> | undefined
  readonly originId: string
  /** Shared by the middleware and handlers of this event. */
  readonly metadata: Map<string, unknown>
  /** Aborted when the container shuts down past its drain timeout, or the handler times out. */
  readonly signal: AbortSignal
  /** Property events: the property's name. */
  readonly propertyName: string | undefined
  /** Property events: the value replaced (`undefined` for a new property). */
  readonly oldValue: JsonValue | undefined
  /** Property-changed events: the value written. */
  readonly newValue: JsonValue | undefined
  /** The whole event. */
  readonly event: SubstateEvent<P>
  /**
   * Emits a nested event (depth-first, inherits the origin id); defaults to this event's subject.
   * Resolves after its handlers and their cascade.
   */
  emit(type: string, payload?: unknown, options?: ContextEmitOptions): Promise<EmitResult>
}

/** Options of `ctx.emit`. */
export interface ContextEmitOptions extends EmitOptions {
  /** The subject of the nested event. @default ctx.subject */
  readonly subject?: Subject | string
}

/** Options of `emit`. */
export interface EmitOptions {
  /** Context for handlers (`ctx.extra`); not sent on the wire. */
  readonly extra?: Record<string, unknown>
  /** Send to this URL (needs the container's `targets.dispatchUrl`), not to local handlers. */
  readonly dispatchUrl?: string
  /** Publish to this topic (needs the container's `targets.topic`), not to local handlers. */
  readonly topic?: string
}

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

/** Removes a handler; also `Disposable` (`using off = on(...)`). */
export type Unsubscribe = (() => void) & Disposable

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

/** `emit`: dispatch an event about a subject; see {@link Container.emit}. */
export type Emit<E> = <const T extends string>(
  type: T,
  subject: Subject | string,
  payload?: PayloadOf<E, T>,
  options?: EmitOptions,
) => Promise<EmitResult>

/** What `container.handlers()` hands out. */
export interface Handlers<E> {
  readonly on: On<E>
  readonly when: <C = EventContext>(filter: Filter<C>) => WhenFilter<C>
  readonly middleware: (fn: Middleware<EventContext>) => Unsubscribe
  readonly emit: Emit<E>
}

/** Options of {@link Container.schedule}. */
export interface ScheduleOptions {
  /**
   * Identifies the schedule in storage: containers sharing a storage and a schedule name share
   * its ticks (each tick is handled by one of them).
   * @default the event type
   */
  readonly name?: string
  /** Subject of the scheduled events. @default `schedule:<name>` */
  readonly subject?: string
}

/** An event arriving from outside (HTTP, Pub/Sub), handled in a unit of work by `receive`. */
export interface IncomingEvent {
  readonly id: string
  readonly source: string
  readonly type: string
  readonly subject: string
  readonly payload?: unknown
  /** Milliseconds since the epoch. @default now */
  readonly time?: number
  /** The sender's origin id (re-seeds this cascade). @default a new one */
  readonly originId?: string
  readonly extensions?: Readonly<Record<string, string | number | boolean>>
  /** For property events sent by another service. */
  readonly propertyName?: string
}

/** The outcome of {@link Container.receive}. */
export interface ReceiveResult {
  /**
   * `handled`: handlers succeeded (or failures were durably dead-lettered) and every subject the
   * unit touched was stored: acknowledge. `duplicate`: this `source`+`id` was already handled:
   * acknowledge. `failed`: do not acknowledge; nothing the unit cached was stored.
   */
  readonly status: 'handled' | 'duplicate' | 'failed'
  readonly result?: EmitResult
  /** Why it failed: the first undead-lettered failure's error, or the storage error. */
  readonly error?: Error
}

/** What `close()` reports. */
export interface CloseReport {
  /** Top-level events and units of work that were in flight when close began. */
  readonly drained: number
  /** Subjects whose pending writes were stored. */
  readonly stored: number
  /** True when in-flight work outlived `drainTimeout` (it was aborted through `ctx.signal`). */
  readonly timedOut: boolean
  /** What failed while closing (storing, flushing, hooks). */
  readonly errors: readonly unknown[]
}

/** Options of {@link createContainer}. */
export interface ContainerOptions {
  /** Storage for subjects, or a function choosing one per subject name. @default in-memory */
  readonly storage?: StorageProvider
  /** CloudEvents `source` of the events this container emits. @default 'substate' */
  readonly source?: string
  /** Maximum cascade depth before `CascadeDepthError`. @default 64 */
  readonly maxDepth?: number
  /** `result`: `emit` resolves with failures listed; `throw`: it rejects with an `AggregateError`. @default 'result' */
  readonly errorMode?: 'result' | 'throw'
  /** Live subjects kept in the identity map; idle clean ones beyond this are evicted. @default 10_000 */
  readonly maxSubjects?: number
  /** Where events go when a handler's retries are exhausted. @default none */
  readonly deadLetter?: DeadLetterSink
  /** Units of work handled at once by `receive` (across subjects). @default 64 */
  readonly concurrency?: number
  /** How many handled `source`+`id` pairs `receive` remembers to drop duplicates. @default 10_000 */
  readonly dedupWindow?: number
  /** How many recent events `container.eventLog` keeps (0 turns it off). @default 100 */
  readonly eventLog?: number
  /**
   * Durable subject timers (`subject.schedule`): how often storage is polled for due timers and
   * how long a replica holds one it fires. Polling starts with the first `subject.schedule` of
   * this container, or with `container.start()` (call it where timers scheduled elsewhere, or
   * before a restart, must fire).
   */
  readonly timers?: TimerOptions
  /** Transports for `emit(..., { dispatchUrl })` and `emit(..., { topic })`. */
  readonly targets?: {
    readonly dispatchUrl?: (url: string) => OutboundEmitter
    readonly topic?: (topic: string) => OutboundEmitter
  }
}

/** Options of `container.request`. */
export interface RequestOptions extends EmitOptions {
  /** The reply's event type (a glob). */
  readonly reply: string
  /** @default 30_000 */
  readonly timeout?: number
}

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

/**
 * A container: the handlers, the subjects (one live state per name) and the event stream. Create
 * one with {@link createContainer}.
 */
export interface Container<E extends EventMap = EventMap> {
  /** The `on`, `when`, `middleware` and `emit` of this container. */
  handlers(): Handlers<E>
  readonly on: On<E>
  readonly when: <C = EventContext>(filter: Filter<C>) => WhenFilter<C>
  readonly middleware: (fn: Middleware<EventContext>) => Unsubscribe
  /**
   * Dispatches an event about `subject` and resolves after every matching handler, and every
   * cascade they caused, has finished. Middleware wraps the dispatch once (first registered
   * outermost) and runs even when no handler matches. Handlers run one after another in
   * registration order; a failing one does not stop the others. Resolves with an
   * {@link EmitResult} listing every failure of the cascade; with `errorMode: 'throw'` it rejects
   * with an `AggregateError` of them instead. Every failure also reaches the `onError` hooks.
   * Rejects with `ShutdownError` once `close()` began (nested emits from running handlers still work).
   */
  readonly emit: Emit<E>
  /** The subject handle for `name` (sync; state loads lazily). Same name, same live state. */
  subject(name: string): Subject
  /** Every dispatched event. Completes on `close()`. */
  readonly events$: Observable<SubstateEvent>
  /** The events whose type matches a glob. */
  select(pattern: string): Observable<SubstateEvent>
  /** Registers the methods of an instance decorated with `@on` / `@when`. */
  register(instance: object): Unsubscribe
  /** Sends events whose type matches `pattern` to an outbound emitter. */
  route(
    pattern: string | readonly string[],
    emitter: OutboundEmitter,
    options?: RouteOptions,
  ): Unsubscribe
  /**
   * Handles an event from outside in a unit of work: events for one subject one at a time in
   * arrival order, different subjects concurrently (up to `concurrency`); every subject touched is
   * stored before it resolves `handled`. A failed unit stores nothing it cached.
   */
  receive(event: IncomingEvent): Promise<ReceiveResult>
  /** Called with every failure (handlers, filters, middleware, routes). Without hooks, failures are logged. */
  onError(hook: (failure: HandlerFailure) => void): Unsubscribe
  onStart(hook: () => Promise<void> | void): Unsubscribe
  /** Called first on `close()`, before draining: stop ingresses here. */
  onClose(hook: () => Promise<void> | void): Unsubscribe
  /** Runs the `onStart` hooks (once). */
  start(): Promise<void>
  /**
   * Graceful drain: stops intake, runs `onClose` hooks, waits for in-flight work (at most
   * `drainTimeout` ms, then aborts `ctx.signal`), stores dirty subjects, flushes and closes
   * outbound emitters, closes storage, completes the observables.
   */
  close(options?: { drainTimeout?: number }): Promise<CloseReport>
  /** Per-handler counters and latencies. */
  readonly metrics: { snapshot(): MetricsSnapshot }
  /** The most recent events, newest first: `eventLog.recent(20, { type: 'device.*' })`. */
  readonly eventLog: EventLog
  /**
   * Emits `type` on a schedule: `{ every: ms }` (on multiples of `every` since the epoch) or
   * `{ cron: 'm h dom mon dow' }` (UTC). Each tick is claimed in storage by compare-and-set, so
   * replicas sharing a storage handle it once between them, never twice; with one process (or
   * memory storage) it simply runs. A claimed tick is handled as a unit of work (`receive`):
   * what its handlers cache is stored. Ticks missed while no replica ran are not caught up.
   * Stops when the returned function is called or the container closes.
   *
   * @example
   * container.schedule('report.hourly', { cron: '0 * * * *' })
   */
  schedule(
    type: string,
    when: ScheduleSpec,
    payload?: unknown,
    options?: ScheduleOptions,
  ): Unsubscribe
  /**
   * Request/reply: emits `type` and resolves with the first `reply` event (a glob) of the same
   * cascade (same origin id) — a local handler's `ctx.emit(reply)`, or a reply that came back from
   * another service carrying this request's `originid`. Rejects with `TimeoutError` after
   * `timeout` ms, with `ShutdownError` when the container closes, and with an `AggregateError`
   * when a handler of the request failed and no reply came.
   *
   * @example
   * const reply = await container.request('price.quote', 'sku:1', { qty: 3 }, { reply: 'price.quoted' })
   */
  request<R = unknown>(
    type: string,
    subject: Subject | string,
    payload?: unknown,
    options?: RequestOptions,
  ): Promise<SubstateEvent<R>>
  readonly source: string
  readonly closed: boolean
}

interface HandlerEntry {
  readonly name: string
  readonly stats: HandlerStats
  /** No retry policy and no timeout: one attempt, called inline. */
  readonly simple: boolean
  readonly fn: Handler
  readonly filters: readonly Filter[]
  readonly options: HandlerOptions
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
function envelopeProblem(
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

const FILTER: unique symbol = Symbol.for('substate.filter') as never
const ROUTES = Symbol.for('substate.routes')
/** The `source` of scheduled events (the same on every replica, so ticks dedupe across them). */
const SCHEDULE_SOURCE = 'substate/schedule'
/** The longest delay a Node timer takes (2^31 - 1 ms, ~24.8 days). */
const MAX_TIMER = 2 ** 31 - 1
/** An event the engine makes itself (a schedule's tick, a timer), for reports of its failures. */
const ownEvent = (
  id: string,
  source: string,
  type: string,
  subject: string,
  time: number,
  payload?: unknown,
): SubstateEvent => ({ id, type, source, subject, time, payload, originId: '', extra: undefined })
/** The id of a schedule's tick: the same on every replica. */
const tickId = (name: string, at: number): string => `${name}@${new Date(at).toISOString()}`
/** `#dispatch` without a value to resolve with: it resolves with the `EmitResult`. */
const NO_VALUE: unique symbol = Symbol('no value')
const FILTERS = Symbol.for('substate.filters')
const dispose: typeof Symbol.dispose = Symbol.dispose ?? (Symbol.for('Symbol.dispose') as never)

const unsubscribe = (fn: () => void): Unsubscribe => Object.assign(fn, { [dispose]: fn })

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !(FILTER in v)

/** Parses `on`'s variadic arguments: patterns, then filters and options, then the handler. */
function parseOn(args: unknown[]): {
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

/** Milliseconds of backoff before retry `n` (1-based), with ±20 % jitter. */
function backoff(policy: HandlerOptions['retry'], n: number): number {
  const { initial = 50, factor = 2, max = 5000 } = policy?.backoff ?? {}
  const base = Math.min(max, initial * factor ** (n - 1))
  return base * (0.8 + Math.random() * 0.4)
}

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve()
    const t = setTimeout(done, ms)
    function done(): void {
      clearTimeout(t)
      signal.removeEventListener('abort', done)
      resolve()
    }
    signal.addEventListener('abort', done, { once: true })
  })

class Context implements EventContext {
  readonly event: SubstateEvent
  readonly subject: Subject
  readonly signal: AbortSignal
  readonly #engine: Engine
  #metadata: Map<string, unknown> | undefined
  /** The dispatch's own state, passed through the (shared) composed middleware chain. */
  dispatch: { scope: Scope; targets: OutboundEmitter[] | undefined; handled: number } | undefined

  // Fields are read through the event: a context is built per event, on the hot path.
  constructor(engine: Engine, event: SubstateEvent, subject: Subject, signal: AbortSignal) {
    this.#engine = engine
    this.event = event
    this.subject = subject
    this.signal = signal
  }

  get type(): string {
    return this.event.type
  }
  get id(): string {
    return this.event.id
  }
  get payload(): unknown {
    return this.event.payload
  }
  get extra(): Readonly<Record<string, unknown>> | undefined {
    return this.event.extra
  }
  get originId(): string {
    return this.event.originId
  }
  get propertyName(): string | undefined {
    return this.event.propertyName
  }
  get oldValue(): JsonValue | undefined {
    return this.event.oldValue
  }
  get newValue(): JsonValue | undefined {
    return this.event.newValue
  }

  get metadata(): Map<string, unknown> {
    this.#metadata ??= new Map()
    return this.#metadata
  }

  emit(type: string, payload?: unknown, options?: ContextEmitOptions): Promise<EmitResult> {
    // This event's origin id, also from a batch handler (whose scope carries the first event's).
    const subject = options?.subject ?? this.subject
    return this.#engine.emitFrom(this.event.originId, type, subject, payload, options)
  }
}

/** A derived context for one handler attempt with its own (timeout) signal. */
const withSignal = (ctx: EventContext, signal: AbortSignal): EventContext =>
  Object.create(ctx, { signal: { value: signal } }) as EventContext

class Engine implements Container {
  readonly source: string
  readonly #storage: StorageProvider
  readonly #maxDepth: number
  readonly #throw: boolean
  readonly #maxSubjects: number
  readonly #deadLetter: DeadLetterSink | undefined
  readonly #targets: ContainerOptions['targets']
  readonly #router = new Router<HandlerEntry>()
  readonly #routes = new Router<RouteEntry>()
  readonly #middleware: Middleware<EventContext>[] = []
  #composed: ((ctx: EventContext) => Promise<void>) | undefined
  readonly #subjects = new Map<string, SubjectState>()
  #sweepAt: number
  readonly #events = new RxSubject<SubstateEvent>()
  readonly events$: Observable<SubstateEvent> = this.#events.asObservable()
  readonly #errorHooks = new Set<(f: HandlerFailure) => void>()
  readonly #startHooks = new Set<() => Promise<void> | void>()
  readonly #closeHooks = new Set<() => Promise<void> | void>()
  /** Flushes the partial batch of each batch handler (on close). */
  readonly #batches = new Set<() => void>()
  /** Stops each running schedule (on close). */
  readonly #schedules = new Set<() => void>()
  readonly #timers: Timers
  /** Subjects the engine itself writes (schedule claims, timers): their storages close too. */
  readonly #internal = new Set<string>()
  readonly #emitters = new Set<OutboundEmitter>()
  readonly #targetCache = new Map<string, OutboundEmitter>()
  readonly #queue: KeyedQueue
  readonly #recent: RecentKeys
  readonly #receiving = new Map<string, Promise<ReceiveResult>>()
  readonly #abort = new AbortController()
  readonly #metrics = new Metrics()
  readonly metrics: { snapshot(): MetricsSnapshot } = { snapshot: () => this.#metrics.snapshot() }
  readonly #log: EventRing
  readonly eventLog: EventLog
  readonly #idPrefix = randomUUID().slice(0, 18)
  #seq = 0
  #inflight = 0
  #idle: (() => void) | undefined
  #closing = false
  #closed: Promise<CloseReport> | undefined
  #started: Promise<void> | undefined
  #anonymous = 0

  constructor(options: ContainerOptions) {
    this.source = options.source ?? 'substate'
    this.#storage = options.storage ?? createMemoryStorage()
    this.#maxDepth = options.maxDepth ?? 64
    this.#throw = options.errorMode === 'throw'
    this.#maxSubjects = options.maxSubjects ?? 10_000
    this.#sweepAt = this.#maxSubjects
    this.#deadLetter = options.deadLetter
    this.#targets = options.targets
    this.#queue = new KeyedQueue(options.concurrency ?? 64)
    this.#recent = new RecentKeys(options.dedupWindow ?? 10_000)
    this.#log = new EventRing(options.eventLog ?? 100)
    this.eventLog = this.#log
    this.#timers = new Timers(
      {
        storageFor: (name) => this.#host.storageFor(name),
        fire: (t) => {
          if (this.#closing) return Promise.resolve(false)
          this.#internal.add(TIMERS)
          return this.receive({
            id: t.id,
            source: TIMER_SOURCE,
            type: t.type,
            subject: t.subject,
            payload: t.payload,
            time: t.at,
          }).then(
            (r) => {
              this.#reportUnstored(
                'timers',
                ownEvent(t.id, TIMER_SOURCE, t.type, t.subject, t.at),
                r,
              )
              return r.status === 'handled' || r.status === 'duplicate'
            },
            () => false,
          )
        },
        report: (what, subject, type, error) => {
          if (this.#closing) return // storage may be closing under the timers
          const event = ownEvent(this.#newId(), TIMER_SOURCE, type, subject, Date.now())
          this.#report(this.#rootScope(), what, event, error)
        },
      },
      options.timers,
    )
  }

  get closed(): boolean {
    return this.#closing
  }

  // ---- registration ----

  handlers(): Handlers<EventMap> {
    return { on: this.on, when: this.when, middleware: this.middleware, emit: this.emit }
  }

  readonly on: On<EventMap> = ((...args: unknown[]) => {
    const { patterns, filters, options, fn } = parseOn(args)
    if (fn === undefined) return this.#decorator(patterns, options)
    return this.#add(patterns, filters, options, fn)
  }) as On<EventMap>

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
    this.#composed = undefined
    return unsubscribe(() => {
      const i = this.#middleware.indexOf(fn)
      if (i >= 0) this.#middleware.splice(i, 1)
      this.#composed = undefined
    })
  }

  #decorator(patterns: string[], options: HandlerOptions): MethodDecorator {
    return (method, context) => {
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
      fn = this.#batcher(name, options.batch, options.timeout, fn as unknown as BatchHandler)
    const simple = options.retry === undefined && options.timeout === undefined
    const entry = { name, stats: this.#metrics.of(name), simple, fn, filters, options }
    const off = this.#router.add(patterns, entry)
    const un = unsubscribe(off)
    options.signal?.addEventListener('abort', un, { once: true })
    if (options.signal?.aborted) off()
    return un
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
    this.#emitters.add(emitter)
    const patterns = typeof pattern === 'string' ? [pattern] : [...pattern]
    return unsubscribe(
      this.#routes.add(patterns, { emitter, direct: options?.policy === 'direct', send }),
    )
  }

  /**
   * The per-event handler of a batch handler: each event joins the open batch and waits for it.
   * The batch runs as a unit of work of its own (in a scope below its events' deepest, with the
   * first event's origin id): what it writes is stored before any of its events completes, and
   * when it fails (or a nested handler does) nothing it cached is stored and every one of its
   * events fails, to be retried or dead-lettered event by event.
   */
  #batcher(
    name: string,
    { size, wait }: BatchOptions,
    timeout: number | undefined,
    fn: BatchHandler,
  ): Handler {
    if (!(Number.isInteger(size) && size >= 1))
      throw new TypeError(`${name}: batch.size must be an integer >= 1, got ${size}`)
    if (!(typeof wait === 'number' && wait >= 0 && Number.isFinite(wait)))
      throw new TypeError(`${name}: batch.wait must be a number of milliseconds >= 0, got ${wait}`)
    if (timeout !== undefined)
      throw new TypeError(
        `${name}: a batch handler takes no timeout (its events' wait for the batch would count against it; bound the work inside the handler)`,
      )
    interface Batch {
      readonly ctxs: EventContext[]
      depth: number
      readonly done: Promise<void>
      settle(error?: unknown): void
      timer: NodeJS.Timeout | undefined
    }
    let open: Batch | undefined
    const flush = (): void => {
      const batch = open
      if (batch === undefined) return
      open = undefined
      this.#batches.delete(flush)
      clearTimeout(batch.timer)
      this.#runBatch(batch.ctxs, batch.depth, fn).then(
        () => batch.settle(),
        (e: unknown) => batch.settle(e ?? new Error('the batch handler failed')),
      )
    }
    return (ctx) => {
      if (open === undefined) {
        let settle!: (error?: unknown) => void
        const done = new Promise<void>((resolve, reject) => {
          settle = (error) => (error === undefined ? resolve() : reject(error))
        })
        open = { ctxs: [], depth: 0, done, settle, timer: undefined }
        this.#batches.add(flush)
        if (this.#closing) queueMicrotask(flush)
        else open.timer = setTimeout(flush, wait)
      }
      const batch = open
      batch.ctxs.push(ctx)
      batch.depth = Math.max(batch.depth, scopes.getStore()?.depth ?? 0)
      if (batch.ctxs.length >= size) flush()
      return batch.done
    }
  }

  async #runBatch(ctxs: EventContext[], depth: number, fn: BatchHandler): Promise<void> {
    const unit: UnitOfWork = { touched: new Set() }
    const scope: Scope = { depth: depth + 1, originId: ctxs[0]!.originId, failures: [], unit }
    try {
      await scopes.run(scope, () => fn(ctxs))
      // As strict as a unit of work: a failure in the cascade counts unless durably dead-lettered
      // (the events may be ingress units, which would not be acknowledged).
      const failed = scope.failures.find((f) => !(f.deadLettered && f.durable))
      if (failed) throw failed.error
      for (const s of unit.touched) await s.store({ unit })
    } catch (e) {
      this.#discard(unit)
      throw e
    }
  }

  onError(hook: (failure: HandlerFailure) => void): Unsubscribe {
    this.#errorHooks.add(hook)
    return unsubscribe(() => this.#errorHooks.delete(hook))
  }
  onStart(hook: () => Promise<void> | void): Unsubscribe {
    this.#startHooks.add(hook)
    return unsubscribe(() => this.#startHooks.delete(hook))
  }
  onClose(hook: () => Promise<void> | void): Unsubscribe {
    this.#closeHooks.add(hook)
    return unsubscribe(() => this.#closeHooks.delete(hook))
  }

  start(): Promise<void> {
    if (!this.#closing) this.#timers.start()
    this.#started ??= (async () => {
      for (const hook of this.#startHooks) await hook()
    })()
    return this.#started
  }

  // ---- subjects ----

  subject(name: string): SubjectState {
    if (typeof name !== 'string' || name === '') {
      throw new TypeError(`a subject name must be a non-empty string, got ${JSON.stringify(name)}`)
    }
    let s = this.#subjects.get(name)
    if (s === undefined) {
      s = new SubjectState(name, this.#host)
      this.#subjects.set(name, s)
      if (this.#subjects.size > this.#sweepAt) this.#sweep(s)
    }
    return s
  }

  /**
   * Clock eviction: a recently used subject gets a second chance; dirty or busy ones stay, and so
   * does `keep`, the subject being handed out.
   */
  #sweep(keep: SubjectState): void {
    const target = Math.floor(this.#maxSubjects * 0.9)
    // When nothing can go (all dirty or busy), sweep again only after 10 % more growth, so a
    // burst of pending writes does not make every subject() call scan the whole map.
    this.#sweepAt = this.#maxSubjects
    for (let pass = 0; pass < 2 && this.#subjects.size > target; pass++) {
      for (const [name, s] of this.#subjects) {
        if (this.#subjects.size <= target) break
        if (s.recentlyUsed) s.recentlyUsed = false
        else if (s.evictable && s !== keep) {
          s.evict()
          this.#subjects.delete(name)
        }
      }
    }
    if (this.#subjects.size > this.#maxSubjects) {
      this.#sweepAt = Math.ceil(this.#subjects.size * 1.1)
    }
  }

  /** Live subjects in the identity map (for tests and metrics). */
  get liveSubjects(): number {
    return this.#subjects.size
  }

  readonly #host: SubjectHost = {
    storageFor: (name) =>
      typeof this.#storage === 'function' ? this.#storage(name) : this.#storage,
    live: (name) => this.subject(name),
    events$: this.events$,
    scheduleTimer: (subject, type, when, payload) => {
      if (this.#closing) return Promise.reject(new ShutdownError())
      this.#internal.add(TIMERS)
      return this.#timers.add(subject, type, when, payload)
    },
    emitChange: (subject, type, payload, change, extra, parent, value) => {
      const id = this.#newId()
      const event: SubstateEvent = {
        id,
        type,
        source: this.source,
        subject: subject.name,
        time: Date.now(),
        payload,
        originId: parent === undefined ? id : parent.originId,
        extra,
        propertyName: change?.propertyName,
        oldValue: change?.oldValue,
        newValue: change?.newValue,
      }
      // Resolves with the writer's value itself: no promise of its own per change (the hot path).
      return this.#dispatch(
        event,
        subject,
        parent,
        undefined,
        false,
        value,
        parent === undefined && this.#throw,
      ) as Promise<typeof value>
    },
  }

  // ---- dispatch ----

  readonly emit: Emit<EventMap> = (type, subject, payload, options) =>
    this.#emitTop(type, subject, payload, options, undefined)

  /** `emit` from a handler's context: the nested event keeps that context's origin id. */
  emitFrom(
    originId: string,
    type: string,
    subject: Subject | string,
    payload: unknown,
    options: EmitOptions | undefined,
  ): Promise<EmitResult> {
    return this.#emitTop(type, subject, payload, options, undefined, originId)
  }

  #emitTop(
    type: string,
    subject: Subject | string,
    payload: unknown,
    options: EmitOptions | undefined,
    id: string | undefined,
    origin?: string,
  ): Promise<EmitResult> {
    if (typeof type !== 'string' || type === '')
      throw new TypeError(
        `emit(): the event type must be a non-empty string, got ${JSON.stringify(type)}`,
      )
    const s = typeof subject === 'string' ? this.subject(subject) : subject
    if (!(s instanceof SubjectState))
      throw new TypeError(
        'emit(): the subject must be a subject name or a container.subject(...) handle',
      )
    const data = payload === undefined ? undefined : copyJson(payload, `the payload of ${type}`)
    const parent = scopes.getStore()
    if (parent === undefined && this.#closing) return Promise.reject(new ShutdownError())
    const event: SubstateEvent = {
      id: id ?? this.#newId(),
      type,
      source: this.source,
      subject: s.name,
      time: Date.now(),
      payload: data,
      originId: '',
      extra: options?.extra,
    }
    // The event at the top of a cascade is its own origin.
    ;(event as { originId: string }).originId =
      parent === undefined ? event.id : (origin ?? parent.originId)
    // Resolved before the first await: a missing target factory is misuse, thrown synchronously.
    return this.#emitEvent(event, s, parent, this.#targetsFor(options))
  }

  async #emitEvent(
    event: SubstateEvent,
    s: SubjectState,
    parent: Scope | undefined,
    targets: OutboundEmitter[] | undefined,
  ): Promise<EmitResult> {
    const result = await this.#dispatch(event, s, parent, targets, this.#throw, NO_VALUE, false)
    if (this.#throw && !result.ok) throw this.#aggregate(result)
    return result
  }

  #targetsFor(options: EmitOptions | undefined): OutboundEmitter[] | undefined {
    if (options?.dispatchUrl === undefined && options?.topic === undefined) return undefined
    const out: OutboundEmitter[] = []
    if (options.dispatchUrl !== undefined) {
      out.push(this.#target('dispatchUrl', options.dispatchUrl, 'httpEmitter({ url })'))
    }
    if (options.topic !== undefined) {
      out.push(this.#target('topic', options.topic, 'pubsubPublisher({ client, topic })'))
    }
    return out
  }

  /** One emitter per target (URL, topic), made on first use and closed with the container. */
  #target(kind: 'dispatchUrl' | 'topic', target: string, hint: string): OutboundEmitter {
    const key = `${kind}\n${target}`
    let emitter = this.#targetCache.get(key)
    if (emitter === undefined) {
      const make = this.#targets?.[kind]
      if (!make) {
        throw new TypeError(
          `emit(..., { ${kind} }) needs createContainer({ targets: { ${kind}: (${kind === 'topic' ? 'topic' : 'url'}) => ${hint} } })`,
        )
      }
      emitter = make(target)
      this.#targetCache.set(key, emitter)
      this.#emitters.add(emitter)
    }
    return emitter
  }

  #aggregate(result: EmitResult): AggregateError {
    const failed = result.failures.filter((f) => !f.deadLettered)
    return new AggregateError(
      failed.map((f) => f.error),
      `${failed.length} handler(s) failed on ${result.event.type} for ${result.event.subject}: ${failed.map((f) => f.error.message).join('; ')}`,
    )
  }

  #newId(): string {
    return `${this.#idPrefix}-${(this.#seq++).toString(36)}`
  }

  /**
   * Runs one event: middleware (once) around routes and handlers, in a scope one level deeper than
   * the caller's. Failures are merged into the parent scope unless `detach` (the caller rethrows).
   */
  /**
   * With a `value` (anything but `NO_VALUE`, `undefined` included), the promise resolves with
   * `value` instead of the result (rejecting with the failures when `check` and a handler failed): what a subject write returns, without a promise
   * of its own to map the result.
   */
  #dispatch(
    event: SubstateEvent,
    subject: SubjectState,
    parent: Scope | undefined,
    targets: OutboundEmitter[] | undefined,
    detach: boolean,
    value: unknown,
    check: boolean,
  ): Promise<EmitResult> {
    const depth = parent === undefined ? 0 : parent.depth + 1
    if (depth > this.#maxDepth) {
      return Promise.reject(new CascadeDepthError(this.#maxDepth, event.type))
    }
    const scope: Scope = { depth, originId: event.originId, failures: [], unit: parent?.unit }
    if (parent === undefined) this.#inflight++
    return scopes.run(scope, () =>
      this.#run(event, subject, scope, parent, targets, detach, value, check),
    )
  }

  async #run(
    event: SubstateEvent,
    subject: SubjectState,
    scope: Scope,
    parent: Scope | undefined,
    targets: OutboundEmitter[] | undefined,
    detach: boolean,
    value: unknown,
    check: boolean,
  ): Promise<EmitResult> {
    try {
      this.#log.record(event)
      if (this.#events.observed) this.#events.next(event)
      const ctx = new Context(this, event, subject, this.#abort.signal)
      let handled = 0
      if (this.#middleware.length === 0 && targets === undefined && this.#routes.size === 0) {
        // The common case inline (one async frame less per event): local handlers only.
        for (const h of this.#router.match(event.type)) {
          if (h.filters.length > 0) {
            const pass = this.#passes(h, ctx, scope)
            if (!(pass === true || (pass !== false && (await pass)))) continue
          }
          handled++
          if (h.simple) {
            const started = performance.now()
            try {
              await h.fn(ctx)
              h.stats.ok(performance.now() - started)
            } catch (e) {
              h.stats.fail(performance.now() - started)
              await this.#failed(h, ctx, scope, e, 1)
            }
          } else await this.#invoke(h, ctx, scope)
        }
      } else if (this.#middleware.length === 0) {
        handled = await this.#handle(ctx, scope, targets)
      } else {
        this.#composed ??= compose(this.#middleware, async (c) => {
          const d = (c as Context).dispatch!
          d.handled = await this.#handle(c, d.scope, d.targets)
        })
        ctx.dispatch = { scope, targets, handled: 0 }
        try {
          await this.#composed(ctx)
        } catch (e) {
          this.#fail(scope, 'middleware', event, e, 1, false, false)
        }
        handled = ctx.dispatch!.handled
      }
      const failures = scope.failures
      if (parent !== undefined && !detach && failures.length > 0) parent.failures.push(...failures)
      let ok = true
      for (const f of failures) if (!f.deadLettered) ok = false
      if (value === NO_VALUE) return { event, handled, failures, ok }
      if (check && !ok) throw this.#aggregate({ event, handled, failures, ok })
      return value as EmitResult
    } finally {
      if (parent === undefined && --this.#inflight === 0) this.#idle?.()
    }
  }

  async #handle(
    ctx: EventContext,
    scope: Scope,
    targets: OutboundEmitter[] | undefined,
  ): Promise<number> {
    // Explicit targets (dispatchUrl, topic) go remote only. Routes add targets; local handlers
    // still run unless every matching route is 'direct'.
    let local = targets === undefined
    if (targets !== undefined) {
      for (const emitter of targets) {
        try {
          await emitter.send(ctx.event, ctx.subject)
        } catch (e) {
          this.#fail(scope, `route:${emitter.name}`, ctx.event, e, 1, false, false)
        }
      }
    } else if (this.#routes.size > 0) {
      const routes = this.#routes.match(ctx.type)
      if (routes.length > 0) local = !routes.every((r) => r.direct)
      for (const route of routes) {
        try {
          await route.send(ctx.event, ctx.subject)
        } catch (e) {
          this.#fail(scope, `route:${route.emitter.name}`, ctx.event, e, 1, false, false)
        }
      }
    }
    if (!local) return 0
    let handled = 0
    for (const h of this.#router.match(ctx.type)) {
      if (h.filters.length > 0) {
        const pass = this.#passes(h, ctx, scope)
        if (!(pass === true || (pass !== false && (await pass)))) continue
      }
      handled++
      await this.#invoke(h, ctx, scope)
    }
    return handled
  }

  /** All filters pass; sync filters stay sync. A throwing filter counts as false and is reported. */
  #passes(h: HandlerEntry, ctx: EventContext, scope: Scope): boolean | Promise<boolean> {
    for (let i = 0; i < h.filters.length; i++) {
      let r: boolean | Promise<boolean>
      try {
        r = h.filters[i]!(ctx)
      } catch (e) {
        this.#report(scope, `filter:${h.name}`, ctx.event, e)
        return false
      }
      if (r instanceof Promise) return this.#passesAsync(h, ctx, scope, i, r)
      if (!r) return false
    }
    return true
  }

  async #passesAsync(
    h: HandlerEntry,
    ctx: EventContext,
    scope: Scope,
    i: number,
    first: Promise<boolean>,
  ): Promise<boolean> {
    try {
      if (!(await first)) return false
      for (let j = i + 1; j < h.filters.length; j++) if (!(await h.filters[j]!(ctx))) return false
      return true
    } catch (e) {
      this.#report(scope, `filter:${h.name}`, ctx.event, e)
      return false
    }
  }

  /** A handler with a retry policy or a timeout. */
  async #invoke(h: HandlerEntry, ctx: EventContext, scope: Scope): Promise<void> {
    const { retry, timeout } = h.options
    const attempts = retry?.attempts ?? 1
    for (let attempt = 1; ; attempt++) {
      const started = performance.now()
      try {
        if (timeout === undefined) await h.fn(ctx)
        else await this.#withTimeout(h, ctx, timeout)
        h.stats.ok(performance.now() - started)
        return
      } catch (e) {
        if (attempt < attempts && !this.#abort.signal.aborted) {
          h.stats.retry(performance.now() - started)
          await sleep(backoff(retry, attempt), this.#abort.signal)
          continue
        }
        h.stats.fail(performance.now() - started)
        return this.#failed(h, ctx, scope, e, attempt)
      }
    }
  }

  /** After the last attempt: dead-letter if a sink is configured, then record the failure. */
  async #failed(
    h: HandlerEntry,
    ctx: EventContext,
    scope: Scope,
    e: unknown,
    attempts: number,
  ): Promise<void> {
    let deadLettered = false
    const error = new HandlerError(h.name, ctx.type, ctx.subject.name, { cause: e })
    if (this.#deadLetter) {
      try {
        await this.#deadLetter.put({
          event: ctx.event,
          handler: h.name,
          error,
          attempts,
          at: Date.now(),
        })
        deadLettered = true
      } catch (dlError) {
        this.#report(scope, `dead-letter:${h.name}`, ctx.event, dlError)
      }
    }
    const durable = deadLettered && this.#deadLetter!.durable
    this.#fail(scope, h.name, ctx.event, error, attempts, deadLettered, durable)
  }

  async #withTimeout(h: HandlerEntry, ctx: EventContext, ms: number): Promise<void> {
    const ac = new AbortController()
    const signal = AbortSignal.any([this.#abort.signal, ac.signal])
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const err = new TimeoutError(`handler ${h.name}`, ms)
        ac.abort(err)
        reject(err)
      }, ms)
    })
    try {
      await Promise.race([h.fn(withSignal(ctx, signal)), timedOut])
    } finally {
      clearTimeout(timer)
    }
  }

  #fail(
    scope: Scope,
    handler: string,
    event: SubstateEvent,
    e: unknown,
    attempts: number,
    deadLettered: boolean,
    durable: boolean,
  ): void {
    const error =
      e instanceof HandlerError
        ? e
        : new HandlerError(handler, event.type, event.subject, { cause: e })
    const failure: HandlerFailure = { handler, event, error, attempts, deadLettered, durable }
    scope.failures.push(failure)
    this.#notify(failure)
  }

  /** Reported but not a failure of the event (a throwing filter, a dead-letter sink that failed). */
  #report(_scope: Scope, handler: string, event: SubstateEvent, e: unknown): void {
    const error = new HandlerError(handler, event.type, event.subject, { cause: e })
    this.#notify({ handler, event, error, attempts: 1, deadLettered: false, durable: false })
  }

  #notify(failure: HandlerFailure): void {
    if (this.#errorHooks.size === 0) {
      console.error(`[substate] ${failure.error.message}`)
      return
    }
    for (const hook of this.#errorHooks) {
      try {
        hook(failure)
      } catch (e) {
        console.error('[substate] an onError hook threw:', e)
      }
    }
  }

  // ---- scheduling ----

  schedule(
    type: string,
    when: ScheduleSpec,
    payload?: unknown,
    options?: ScheduleOptions,
  ): Unsubscribe {
    if (typeof type !== 'string' || type === '')
      throw new TypeError(
        `schedule(): the event type must be a non-empty string, got ${JSON.stringify(type)}`,
      )
    if (this.#closing) throw new ShutdownError()
    const next = nextTick(when)
    next(Date.now()) // a cron expression that never matches throws here, not later
    const name = options?.name ?? type
    const subject = options?.subject ?? `schedule:${name}`
    const data = payload === undefined ? undefined : copyJson(payload, `the payload of ${type}`)
    const claim = `substate:schedule:${name}`
    let timer: NodeJS.Timeout | undefined
    let stopped = false
    const stop = (): void => {
      stopped = true
      clearTimeout(timer)
      this.#schedules.delete(stop)
    }
    const wait = (at: number): void => {
      if (stopped) return
      // Node caps a timer at ~24.8 days (longer delays fire at once): wait in steps, and never
      // fire a tick before its time.
      const left = at - Date.now()
      if (left > 0) {
        timer = setTimeout(() => wait(at), Math.min(left, MAX_TIMER))
        return
      }
      arm(at) // the next tick does not wait for this one's handlers
      void this.#tick(claim, at, { type, subject, payload: data, name })
    }
    const arm = (after: number): void => {
      if (stopped) return
      let at: number
      try {
        at = next(after)
      } catch (e) {
        // A cron expression that stops matching (a 29 February beyond the search window).
        this.#report(
          this.#rootScope(),
          `schedule:${name}`,
          ownEvent(tickId(name, after), SCHEDULE_SOURCE, type, subject, after, data),
          e,
        )
        return
      }
      wait(at)
    }
    arm(Date.now())
    this.#schedules.add(stop)
    return unsubscribe(stop)
  }

  /** Claims a tick in storage (one replica wins it) and handles it as a unit of work. */
  async #tick(
    claim: string,
    at: number,
    tick: { type: string; subject: string; payload: unknown; name: string },
  ): Promise<void> {
    const event = ownEvent(
      tickId(tick.name, at),
      SCHEDULE_SOURCE,
      tick.type,
      tick.subject,
      at,
      tick.payload,
    )
    let won: boolean
    try {
      const storage = this.#host.storageFor(claim)
      const { changes } = await storage.commit(claim, [
        {
          op: 'update',
          kind: 'prop',
          name: 'tick',
          // The latest tick claimed: a replica that finds this one (or a later one) there lost.
          update: (last) => (typeof last === 'number' && last >= at ? last : at),
        },
      ])
      won = changes[0]?.newValue === at && changes[0]?.oldValue !== at
    } catch (e) {
      // Storage failed: this replica skips the tick (another may have claimed it). Reported,
      // unless the container is closing (its storage may be closed under the claim).
      if (!this.#closing) this.#report(this.#rootScope(), `schedule:${tick.name}`, event, e)
      return
    }
    if (!won || this.#closing) return
    this.#internal.add(claim)
    const result = await this.receive({
      id: event.id,
      source: SCHEDULE_SOURCE,
      type: tick.type,
      subject: tick.subject,
      payload: tick.payload,
      time: at,
    }).catch(() => undefined) // closing meanwhile
    this.#reportUnstored(`schedule:${tick.name}`, event, result)
  }

  /**
   * A unit that failed without a handler failure (its store failed) was reported by nobody:
   * report it (handler failures were reported by the dispatch).
   */
  #reportUnstored(what: string, event: SubstateEvent, result: ReceiveResult | undefined): void {
    if (result?.status !== 'failed' || (result.result?.failures.length ?? 0) > 0) return
    if (!this.#closing) this.#report(this.#rootScope(), what, event, result.error)
  }

  #rootScope(): Scope {
    return { depth: 0, originId: '', failures: [], unit: undefined }
  }

  // ---- request/reply ----

  request<R = unknown>(
    type: string,
    subject: Subject | string,
    payload?: unknown,
    options?: RequestOptions,
  ): Promise<SubstateEvent<R>> {
    if (typeof options?.reply !== 'string') {
      throw new TypeError('request(): options.reply (the reply event type) is required')
    }
    if (this.#closing) return Promise.reject(new ShutdownError())
    const isReply = compileGlob(options.reply)
    const timeout = options.timeout ?? 30_000
    // The request starts its own cascade: its id is the origin id its replies carry.
    const originId = this.#newId()
    return new Promise<SubstateEvent<R>>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined
      let settled = false
      const done = (settle: () => void): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        sub.unsubscribe()
        this.#abort.signal.removeEventListener('abort', onAbort)
        settle()
      }
      const sub = this.events$.subscribe({
        next: (e) => {
          if (e.originId === originId && isReply(e.type) && e.type !== type) {
            done(() => resolve(e as SubstateEvent<R>))
          }
        },
        complete: () =>
          done(() => reject(new ShutdownError('the container closed before the reply came'))),
      })
      const onAbort = (): void =>
        done(() => reject(new ShutdownError('the container closed before the reply came')))
      this.#abort.signal.addEventListener('abort', onAbort, { once: true })
      timer = setTimeout(
        () =>
          done(() =>
            reject(new TimeoutError(`request ${type} (waiting for ${options.reply})`, timeout)),
          ),
        timeout,
      )
      scopes
        .exit(() => this.#emitTop(type, subject, payload, options, originId))
        .then(
          (result) => {
            // A reply during the cascade resolved already; otherwise wait, unless it failed.
            if (!result.ok) done(() => reject(this.#aggregate(result)))
          },
          (e: unknown) => done(() => reject(e)),
        )
    })
  }

  // ---- ingress ----

  receive(input: IncomingEvent): Promise<ReceiveResult> {
    if (this.#closing) return Promise.reject(new ShutdownError())
    for (const f of ['id', 'source', 'type', 'subject'] as const) {
      if (typeof input?.[f] !== 'string' || input[f] === '') {
        throw new TypeError(`receive(): the event's ${f} must be a non-empty string`)
      }
    }
    const key = `${input.source}\n${input.id}`
    if (this.#recent.has(key)) return Promise.resolve({ status: 'duplicate' })
    const running = this.#receiving.get(key)
    // A concurrent delivery of the same event waits for the first: duplicate if it succeeded.
    const work = (running ?? Promise.resolve(undefined)).then((first) =>
      first?.status === 'handled' || first?.status === 'duplicate'
        ? ({ status: 'duplicate' } as const)
        : this.#queue.run(input.subject, () => this.#unit(input, key)),
    )
    this.#receiving.set(key, work)
    this.#inflight++
    return work.finally(() => {
      if (this.#receiving.get(key) === work) this.#receiving.delete(key)
      if (--this.#inflight === 0) this.#idle?.()
    })
  }

  async #unit(input: IncomingEvent, key: string): Promise<ReceiveResult> {
    if (this.#recent.has(key)) return { status: 'duplicate' }
    const unit: UnitOfWork = { touched: new Set() }
    const subject = this.subject(input.subject)
    const event: SubstateEvent = {
      id: input.id,
      type: input.type,
      source: input.source,
      subject: input.subject,
      time: input.time ?? Date.now(),
      payload: input.payload,
      originId: input.originId ?? input.id,
      extra: undefined,
      ...(input.propertyName === undefined ? {} : { propertyName: input.propertyName }),
      ...(input.extensions === undefined ? {} : { extensions: input.extensions }),
    }
    const root: Scope = { depth: -1, originId: event.originId, failures: [], unit }
    let result: EmitResult
    try {
      result = await scopes.run(root, () =>
        this.#dispatch(event, subject, root, undefined, true, NO_VALUE, false),
      )
    } catch (e) {
      this.#discard(unit)
      return { status: 'failed', error: e instanceof Error ? e : new Error(String(e)) }
    }
    const failed = result.failures.find((f) => !(f.deadLettered && f.durable))
    if (failed) {
      this.#discard(unit)
      return { status: 'failed', result, error: failed.error }
    }
    for (const s of unit.touched) {
      // The unit's own writes only (and any made outside units), keyed by the event, so a
      // redelivery has no second effect even where another process handles it.
      const idempotent = this.#host.storageFor(s.name).capabilities.idempotent
      try {
        await s.store(idempotent ? { idempotencyKey: key, unit } : { unit })
      } catch (e) {
        this.#discard(unit)
        return { status: 'failed', result, error: e as Error }
      }
    }
    this.#recent.add(key)
    return { status: 'handled', result }
  }

  /** Drops what a failed unit cached (and only that), so a redelivery starts from storage. */
  #discard(unit: UnitOfWork): void {
    for (const s of unit.touched) s.dropUnit(unit)
  }

  // ---- observation ----

  select(pattern: string): Observable<SubstateEvent> {
    const match = compileGlob(pattern)
    return this.events$.pipe(filter((e) => match(e.type)))
  }

  // ---- shutdown ----

  close({ drainTimeout = 10_000 }: { drainTimeout?: number } = {}): Promise<CloseReport> {
    this.#closed ??= this.#shutdown(drainTimeout)
    return this.#closed
  }

  async #shutdown(drainTimeout: number): Promise<CloseReport> {
    this.#closing = true
    for (const stop of [...this.#schedules]) stop()
    const timersStopped = this.#timers.stop() // no more polls or claims
    // Partial batches go now: nothing more is coming to fill them.
    for (const flush of [...this.#batches]) flush()
    const drained = this.#inflight
    const errors: unknown[] = []
    for (const hook of this.#closeHooks) {
      try {
        await hook()
      } catch (e) {
        errors.push(e)
      }
    }
    let timedOut = false
    if (this.#inflight > 0) {
      const idle = new Promise<void>((resolve) => {
        this.#idle = resolve
      })
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), drainTimeout)
      })
      timedOut = await Promise.race([idle.then(() => false), timeout])
      clearTimeout(timer)
      if (timedOut)
        this.#abort.abort(new ShutdownError('drain timeout: in-flight work was aborted'))
    }
    await timersStopped
    // Timers being fired delete themselves once handled: before storage closes, unless the
    // drain timed out (their handlers were aborted; a timer not deleted fires again elsewhere).
    if (!timedOut) await this.#timers.idle()
    let stored = 0
    for (const s of this.#subjects.values()) {
      if (!s.dirty) continue
      try {
        await s.store()
        stored++
      } catch (e) {
        errors.push(e)
      }
    }
    for (const e of this.#emitters) {
      try {
        await e.flush?.()
        await e.close?.()
      } catch (err) {
        errors.push(err)
      }
    }
    const storages = new Set<SubjectStorage>()
    if (typeof this.#storage !== 'function') storages.add(this.#storage)
    else
      for (const name of [...this.#subjects.keys(), ...this.#internal])
        storages.add(this.#storage(name))
    for (const st of storages) {
      try {
        await st.close()
      } catch (e) {
        errors.push(e)
      }
    }
    this.#abort.abort(new ShutdownError())
    this.#events.complete()
    return { drained, stored, timedOut, errors }
  }
}

/**
 * Creates a container. Give it an event map to type `on` and `emit`.
 *
 * @example
 * const container = createContainer<{ 'order.created': { orderId: string } }>({ source: 'shop' })
 * const { on, emit } = container.handlers()
 * on('order.created', async (ctx) => ctx.subject.set('id', ctx.payload.orderId))
 * await emit('order.created', 'order:1', { orderId: '1' })
 */
export function createContainer<E extends EventMap = EventMap>(
  options: ContainerOptions = {},
): Container<E> {
  return new Engine(options) as unknown as Container<E>
}
