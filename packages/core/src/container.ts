import { filter, type Observable, Subject as RxSubject } from 'rxjs'
import { IdGenerator } from './_internal.js'
import { Batches } from './batch.js'
import { type Clock, systemClock } from './clock.js'
import { closeInOrder } from './close.js'
import type { Middleware } from './compose.js'
import type { CloseReport, ContainerMetricsApi, ContainerOptions } from './container-options.js'
import type { ScheduleSpec } from './cron.js'
import { Dispatcher, RESULT } from './dispatcher.js'
import { ShutdownError } from './errors.js'
import type { Emit, EventContext } from './event-context.js'
import { type EventLog, EventRing } from './event-log.js'
import { Events, ownEvent } from './events.js'
import { Failures } from './failures.js'
import {
  type Filter,
  HandlerRegistry,
  type Handlers,
  type On,
  type WhenFilter,
} from './handlers.js'
import { IdentityMap } from './identity-map.js'
import { Lifecycle } from './lifecycle.js'
import { checkLogger, type Logger } from './logger.js'
import { createMemoryStorage } from './memory-storage.js'
import { Metrics, renderPrometheus } from './metrics.js'
import { OutboxRelay } from './outbox.js'
import { type RequestOptions, request } from './request-reply.js'
import { compileGlob } from './router.js'
import { type RouteOptions, Routes } from './routes.js'
import { type ScheduleOptions, Scheduler } from './scheduler.js'
import { checkSchemas, type PayloadSchemas, type SchemaEvents, validatePayload } from './schemas.js'
import { scopes } from './scope.js'
import type { StorageProvider, SubjectStorage } from './storage.js'
import type { SubjectState } from './subject.js'
import type { SubjectEvents, SubjectHost } from './subject-host.js'
import { Telemetry } from './telemetry.js'
import { TIMER_SOURCE, TIMERS, Timers } from './timers.js'
import type {
  AnySubject,
  DeadLetterSink,
  EventMap,
  HandlerFailure,
  OutboundEmitter,
  PropertyMap,
  SubjectMap,
  SubjectOf,
  SubstateEvent,
  TypedSubject,
  Unsubscribe,
} from './types.js'
import { type IncomingEvent, type ReceiveResult, UnitsOfWork } from './unit-of-work.js'

/** A container declaring no subject types (every subject untyped unless asked for). */
export type NoSubjects = Record<never, never>

/**
 * A container: the handlers, the subjects (one live state per name) and the event stream. Create
 * one with {@link createContainer}.
 */
export interface Container<E extends EventMap = EventMap, S extends SubjectMap = NoSubjects> {
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
  /**
   * The subject handle for `name` (sync; state loads lazily). Same name, same live state. Typed
   * by the container's subject map when `name` matches one of its patterns, or by
   * `subject<Props>(name)`; untyped otherwise (types only: nothing is checked at run time).
   */
  subject<const N extends string>(name: N): SubjectOf<S, N>
  subject<P extends PropertyMap<P>>(name: string): TypedSubject<P>
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
  /** Per-handler counters and latencies; the container's counters and duration histograms. */
  readonly metrics: ContainerMetricsApi
  /** The most recent events, newest first: `eventLog.recent(20, { type: 'device.*' })`. */
  readonly eventLog: EventLog
  /**
   * Emits `type` on a schedule: `{ every: ms }` (on multiples of `every` since the epoch) or
   * `{ cron: 'm h dom mon dow', tz? }` (in a time zone, UTC by default; see `ScheduleSpec`). Each tick is claimed in storage by compare-and-set, so
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
    subject: AnySubject | string,
    payload?: unknown,
    options?: RequestOptions,
  ): Promise<SubstateEvent<R>>
  readonly source: string
  readonly closed: boolean
  /**
   * The dead-letter sink the container was created with (`createContainer({ deadLetter })`), for
   * tools that list or redrive its entries (the inspector's Dead letters view).
   */
  readonly deadLetter: DeadLetterSink | undefined
}

/** The composition root: one instance of each part, wired together. */
// `subject`'s typed overloads are the handle's static types only: the engine returns one class.
class Engine implements Omit<Container, 'subject'> {
  readonly source: string
  readonly deadLetter: DeadLetterSink | undefined
  readonly #storage: StorageProvider
  readonly #clock: Clock
  readonly #schemas: PayloadSchemas | undefined
  readonly #state: Lifecycle = new Lifecycle()
  readonly #ids = new IdGenerator()
  readonly #metrics = new Metrics()
  readonly #failures: Failures
  readonly #batches: Batches
  readonly #handlers: HandlerRegistry
  readonly #routes: Routes
  readonly #subjects: IdentityMap
  readonly #events: Events
  readonly #units: UnitsOfWork
  readonly #relay: OutboxRelay
  readonly #scheduler: Scheduler
  readonly #timers: Timers
  readonly #log: EventRing
  /** The logger (given, or the console). */
  readonly #logger: Logger
  readonly #stream = new RxSubject<SubstateEvent>()
  /** Subjects the engine itself writes (schedule claims, timers): their storages close too. */
  readonly #ownSubjects = new Set<string>()
  #closed: Promise<CloseReport> | undefined
  readonly events$: Observable<SubstateEvent> = this.#stream.asObservable()
  readonly eventLog: EventLog
  readonly metrics: ContainerMetricsApi = {
    snapshot: () => this.#metrics.snapshot(),
    collect: async () => this.#metrics.collect(await this.#relay.pending()),
    prometheus: async () => renderPrometheus(await this.metrics.collect()),
  }
  readonly on: On<EventMap>
  readonly when: <C = EventContext>(filter: Filter<C>) => WhenFilter<C>
  readonly middleware: (fn: Middleware<EventContext>) => Unsubscribe
  readonly emit: Emit<EventMap>

  constructor(options: ContainerOptions) {
    this.source = options.source ?? 'substate'
    this.deadLetter = options.deadLetter
    const clock = options.clock ?? systemClock
    if (
      typeof clock?.now !== 'function' ||
      typeof clock.setTimeout !== 'function' ||
      typeof clock.clearTimeout !== 'function'
    )
      throw new TypeError(
        'createContainer(): clock must have now(), setTimeout() and clearTimeout()',
      )
    this.#clock = clock
    this.#storage = options.storage ?? createMemoryStorage({ clock })
    this.#schemas = checkSchemas(options.schemas)
    const state = this.#state
    const throws = options.errorMode === 'throw'
    this.#log = new EventRing(options.eventLog ?? 100)
    this.eventLog = this.#log
    const logger =
      options.logger === undefined ? undefined : checkLogger(options.logger, 'createContainer()')
    const telemetry = new Telemetry(options)
    this.#failures = new Failures(options.deadLetter, logger, this.#metrics, clock)
    const log = this.#failures.log
    this.#logger = log
    this.#batches = new Batches(
      state,
      async (home, body) => {
        const ran = await this.#units.run(undefined, home, body)
        if (ran.kind === 'failed') throw ran.error
      },
      clock,
    )
    this.#handlers = new HandlerRegistry(this.#metrics, this.#batches.wrap)
    this.#routes = new Routes(options.targets, this.#failures, {
      metrics: this.#metrics,
      telemetry,
    })
    const host: SubjectHost = {
      storageFor: (name) => this.#storageFor(name),
      live: (name) => this.#subjects.get(name),
      events$: this.events$,
      state,
      addTimer: (subject, type, when, payload) => {
        if (state.closing) return Promise.reject(new ShutdownError())
        this.#ownSubjects.add(TIMERS)
        const unit = scopes.getStore()?.unit
        if (unit === undefined) return this.#timers.add(subject, type, when, payload)
        // In a unit of work the timer is stored with the unit's commit (not at all if discarded).
        const { key, record, handle } = this.#timers.prepare(subject, type, when, payload)
        return this.#subjects
          .get(TIMERS)
          .set(key, record, { muted: true })
          .then(() => {
            unit.committed.push(() => this.#timers.stored(handle.at))
            return handle
          })
      },
      // Set below, before any subject exists (the events need the identity map).
      events: undefined as unknown as SubjectEvents,
    }
    this.#subjects = new IdentityMap(options.maxSubjects ?? 10_000, host)
    const dispatcher = new Dispatcher({
      maxDepth: options.maxDepth ?? 64,
      handlers: this.#handlers,
      routes: this.#routes,
      failures: this.#failures,
      log: this.#log,
      events: this.#stream,
      work: state,
      emitter: { emitFrom: (...args) => this.#events.emitFrom(...args) },
      metrics: this.#metrics,
      telemetry,
      clock,
    })
    this.#events = new Events({
      source: this.source,
      ids: this.#ids,
      dispatcher,
      subjects: this.#subjects,
      routes: this.#routes,
      failures: this.#failures,
      throws,
      state,
      clock,
    })
    host.events = this.#events
    this.#relay = new OutboxRelay(
      {
        resolve: (target, event) => this.#routes.resolve(target, event),
        subject: (name) => this.#subjects.get(name),
        report: (what, event, error) => this.#failures.report(what, event, error, 'warn'),
        log,
        clock,
      },
      options.outbox,
    )
    const relay = this.#relay
    this.#units = new UnitsOfWork(
      {
        subject: (name) => this.#subjects.get(name),
        storageFor: (name) => this.#storageFor(name),
        dispatch: (event, root) =>
          dispatcher.dispatch({
            event,
            subject: this.#subjects.get(event.subject),
            parent: root,
            targets: undefined,
            detach: true,
            value: RESULT,
            check: false,
          }),
        publish: (event) => {
          this.#log.record(event)
          if (this.#stream.observed) this.#stream.next(event)
        },
        relay: (sends, storage, stored) => relay.sendCommitted(sends, storage, stored),
        outbox: relay,
        get closing() {
          return state.closing
        },
        begin: () => state.enter(),
        end: () => state.leave(),
        metrics: this.#metrics,
        telemetry,
        log,
        clock,
      },
      {
        ...(options.concurrency === undefined ? {} : { concurrency: options.concurrency }),
        ...(options.dedupWindow === undefined ? {} : { dedupWindow: options.dedupWindow }),
        ...(options.conflictTimeout === undefined
          ? {}
          : { conflictTimeout: options.conflictTimeout }),
      },
    )
    const receive = (input: IncomingEvent): Promise<ReceiveResult> => this.#units.receive(input)
    this.#scheduler = new Scheduler({
      state,
      failures: this.#failures,
      clock,
      storageFor: (name) => this.#storageFor(name),
      ownSubject: (name) => this.#ownSubjects.add(name),
      receive,
    })
    this.#timers = new Timers(
      {
        storageFor: (name) => this.#storageFor(name),
        fire: (t) => {
          if (state.closing) return Promise.resolve(false)
          this.#ownSubjects.add(TIMERS)
          const input = { id: t.id, source: TIMER_SOURCE, type: t.type, subject: t.subject }
          return receive({ ...input, payload: t.payload, time: t.at }).then(
            (r) => {
              if (!state.closing) {
                const event = ownEvent(t.id, TIMER_SOURCE, t.type, t.subject, t.at)
                this.#failures.reportUnstored('timers', event, r)
              }
              return r.status === 'handled' || r.status === 'duplicate'
            },
            () => false,
          )
        },
        report: (what, subject, type, error) => {
          if (state.closing) return // storage may be closing under the timers
          const event = ownEvent(this.#ids.next(), TIMER_SOURCE, type, subject, clock.now())
          this.#failures.report(what, event, error)
        },
        clock,
      },
      options.timers,
    )
    this.on = this.#handlers.on as On<EventMap>
    this.when = this.#handlers.when
    this.middleware = this.#handlers.middleware
    this.emit = this.#events.emit
  }

  #storageFor(name: string): SubjectStorage {
    return typeof this.#storage === 'function' ? this.#storage(name) : this.#storage
  }

  get closed(): boolean {
    return this.#state.closing
  }

  /** Live subjects in the identity map (for tests and metrics). */
  get liveSubjects(): number {
    return this.#subjects.size
  }

  handlers(): Handlers<EventMap> {
    return { on: this.on, when: this.when, middleware: this.middleware, emit: this.emit }
  }

  register(instance: object): Unsubscribe {
    return this.#handlers.register(instance)
  }

  route(
    pattern: string | readonly string[],
    emitter: OutboundEmitter,
    options?: RouteOptions,
  ): Unsubscribe {
    return this.#routes.route(pattern, emitter, options)
  }

  subject(name: string): SubjectState {
    return this.#subjects.get(name)
  }

  select(pattern: string): Observable<SubstateEvent> {
    const match = compileGlob(pattern)
    return this.events$.pipe(filter((e) => match(e.type)))
  }

  receive(input: IncomingEvent): Promise<ReceiveResult> {
    // A service that receives relays its storage's outbox (what a crashed replica left).
    if (typeof input?.subject === 'string' && input.subject !== '' && !this.#state.closing)
      this.#relay.watch(this.#storageFor(input.subject))
    const schemas = this.#schemas
    if (schemas === undefined || !Object.hasOwn(schemas, input?.type))
      return this.#units.receive(input)
    return validatePayload(schemas, input.type, input.payload).then((payload) =>
      this.#units.receive({ ...input, payload }),
    )
  }

  schedule(
    type: string,
    when: ScheduleSpec,
    payload?: unknown,
    options?: ScheduleOptions,
  ): Unsubscribe {
    return this.#scheduler.schedule(type, when, payload, options)
  }

  request<R = unknown>(
    type: string,
    subject: AnySubject | string,
    payload?: unknown,
    options?: RequestOptions,
  ): Promise<SubstateEvent<R>> {
    const host = {
      state: this.#state,
      signal: this.#state.signal,
      events$: this.events$,
      ids: this.#ids,
      events: this.#events,
      failures: this.#failures,
      clock: this.#clock,
    }
    return request<R>(host, type, subject, payload, options)
  }

  onError(hook: (failure: HandlerFailure) => void): Unsubscribe {
    return this.#failures.onError(hook)
  }
  onStart(hook: () => Promise<void> | void): Unsubscribe {
    return this.#state.onStart(hook)
  }
  onClose(hook: () => Promise<void> | void): Unsubscribe {
    return this.#state.onClose(hook)
  }

  start(): Promise<void> {
    if (!this.#state.closing) {
      this.#timers.start()
      if (typeof this.#storage !== 'function') this.#relay.watch(this.#storage)
    }
    return this.#state.start()
  }

  close({ drainTimeout = 10_000 }: { drainTimeout?: number } = {}): Promise<CloseReport> {
    this.#closed ??= closeInOrder(
      {
        state: this.#state,
        scheduler: this.#scheduler,
        timers: this.#timers,
        batches: this.#batches,
        subjects: this.#subjects,
        relay: this.#relay,
        emitters: this.#routes.emitters,
        storages: () => this.#storages(),
        stream: this.#stream,
        logger: this.#logger,
        source: this.source,
      },
      drainTimeout,
    )
    return this.#closed
  }

  /** The storages of every subject used (their own, or the one shared). */
  #storages(): Set<SubjectStorage> {
    const storages = new Set<SubjectStorage>()
    if (typeof this.#storage !== 'function') storages.add(this.#storage)
    else
      for (const name of [...this.#subjects.names(), ...this.#ownSubjects])
        storages.add(this.#storage(name))
    return storages
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
export function createContainer<const Schemas extends PayloadSchemas>(
  options: ContainerOptions & { readonly schemas: Schemas },
): Container<SchemaEvents<Schemas>>
export function createContainer<E extends EventMap = EventMap, S extends SubjectMap = NoSubjects>(
  options?: ContainerOptions,
): Container<E, S>
export function createContainer(options: ContainerOptions = {}): Container {
  return new Engine(options) as unknown as Container
}
