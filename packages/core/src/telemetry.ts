/*
 * Tracing through OpenTelemetry, an optional peer: `@opentelemetry/api` is loaded only when a
 * container is given a `tracer` or `tracing: true`. Without either, nothing here runs on the hot
 * path (callers check `on` first). Spans follow OpenTelemetry's messaging conventions and carry
 * the CloudEvents attributes; trace context travels in the CloudEvents Distributed Tracing
 * extension (`traceparent`, `tracestate`).
 */
import { createRequire } from 'node:module'

/** An OpenTelemetry span, as Substate uses it (structurally `Span` of `@opentelemetry/api`). */
export interface SpanLike {
  spanContext(): {
    traceId: string
    spanId: string
    traceFlags: number
    traceState?: { serialize(): string }
  }
  setAttribute(key: string, value: string | number | boolean): unknown
  addEvent(name: string, attributes?: Record<string, string | number | boolean>): unknown
  setStatus(status: { code: number; message?: string }): unknown
  recordException(exception: Error | string): unknown
  end(): void
}

/** An OpenTelemetry tracer (structurally `Tracer` of `@opentelemetry/api`). */
export interface TracerLike {
  startSpan(name: string, options?: object, context?: unknown): SpanLike
}

/** Tracing options of `createContainer`. */
export interface TracingOptions {
  /**
   * The tracer spans are made with (`trace.getTracer('my-service')`); it needs
   * `@opentelemetry/api` installed. @default none (no spans)
   */
  readonly tracer?: TracerLike
  /**
   * `true`: trace with the global tracer provider of `@opentelemetry/api` (which must be
   * installed). Ignored when a `tracer` is given. @default false
   */
  readonly tracing?: boolean
}

/** The parts of `@opentelemetry/api` used here. */
interface Api {
  trace: {
    getTracer(name: string, version?: string): TracerLike
    setSpan(ctx: unknown, span: SpanLike): unknown
    setSpanContext(ctx: unknown, sc: object): unknown
  }
  context: { active(): unknown; with<T>(ctx: unknown, fn: () => T): T }
  ROOT_CONTEXT: unknown
  createTraceState(raw?: string): unknown
}

/** What an event span needs of an event. */
interface EventLike {
  readonly id: string
  readonly type: string
  readonly subject: string
  readonly source: string
  readonly originId?: string | undefined
  readonly extensions?: Readonly<Record<string, string | number | boolean>> | undefined
}

// SpanKind and SpanStatusCode of @opentelemetry/api (stable numbers).
const INTERNAL = 0
const PRODUCER = 3
const CONSUMER = 4
const STATUS_ERROR = 2

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/

function loadApi(): Api {
  try {
    return createRequire(import.meta.url)('@opentelemetry/api') as Api
  } catch (e) {
    throw new TypeError(
      'createContainer({ tracer | tracing: true }) needs the optional peer dependency @opentelemetry/api: install it',
      { cause: e },
    )
  }
}

/** The attributes of an event (messaging and CloudEvents conventions). */
function eventAttributes(
  e: EventLike,
  operation: string,
  type: string,
): Record<string, string | number | boolean> {
  const a: Record<string, string | number | boolean> = {
    'messaging.system': 'substate',
    'messaging.operation.name': operation,
    'messaging.operation.type': type,
    'messaging.destination.name': e.type,
    'messaging.message.id': e.id,
    'cloudevents.event_id': e.id,
    'cloudevents.event_type': e.type,
    'cloudevents.event_subject': e.subject,
    'cloudevents.event_source': e.source,
    'cloudevents.event_spec_version': '1.0',
  }
  if (e.originId !== undefined) a['substate.origin_id'] = e.originId
  return a
}

/**
 * The tracing of a container. `on` is false without a tracer: then no method is called.
 * Parents are passed explicitly (the cascade's scope carries its current span), so spans nest
 * without a context manager; handlers run in their span's context for the application's own.
 */
export class Telemetry {
  readonly on: boolean
  readonly #api: Api | undefined
  readonly #tracer: TracerLike | undefined

  constructor(options: TracingOptions = {}) {
    if (options.tracer === undefined && options.tracing !== true) {
      this.on = false
      return
    }
    if (options.tracer !== undefined && typeof options.tracer?.startSpan !== 'function')
      throw new TypeError('createContainer(): tracer must be an OpenTelemetry Tracer')
    this.#api = loadApi()
    this.#tracer = options.tracer ?? this.#api.trace.getTracer('@substate/core')
    this.on = true
  }

  #context(parent: SpanLike | undefined): unknown {
    const api = this.#api!
    return parent === undefined
      ? api.context.active()
      : api.trace.setSpan(api.context.active(), parent)
  }

  /**
   * A unit of work (`process <type>`, a consumer span): its parent is the trace context the event
   * arrived with (`traceparent`), else the active context.
   */
  unit(event: EventLike | undefined, home: string): SpanLike {
    const api = this.#api!
    let ctx = api.context.active()
    const remote = event === undefined ? undefined : remoteContext(event.extensions)
    if (remote !== undefined) {
      ctx = api.trace.setSpanContext(api.ROOT_CONTEXT, {
        traceId: remote.traceId,
        spanId: remote.spanId,
        traceFlags: remote.flags,
        isRemote: true,
        ...(remote.state === undefined ? {} : { traceState: api.createTraceState(remote.state) }),
      })
    }
    const attributes =
      event === undefined
        ? { 'messaging.system': 'substate', 'messaging.operation.type': 'process' }
        : eventAttributes(event, 'process', 'process')
    // A received event without an origin id starts a cascade of its own id.
    if (event !== undefined && event.originId === undefined)
      (attributes as Record<string, string>)['substate.origin_id'] = event.id
    const span = this.#tracer!.startSpan(
      event === undefined ? 'process batch' : `process ${event.type}`,
      { kind: CONSUMER, attributes: { ...attributes, 'substate.unit.subject': home } },
      ctx,
    )
    return span
  }

  /** An event dispatch (`dispatch <type>`). */
  dispatch(event: EventLike, parent: SpanLike | undefined, depth: number): SpanLike {
    const attributes = eventAttributes(event, 'dispatch', 'process')
    attributes['substate.depth'] = depth
    return this.#tracer!.startSpan(
      `dispatch ${event.type}`,
      { kind: INTERNAL, attributes },
      this.#context(parent),
    )
  }

  /** A handler's run, all its attempts (`handle <handler>`). */
  handler(name: string, event: EventLike, parent: SpanLike | undefined): SpanLike {
    const attributes = eventAttributes(event, 'handle', 'process')
    attributes['substate.handler'] = name
    return this.#tracer!.startSpan(
      `handle ${name}`,
      { kind: INTERNAL, attributes },
      this.#context(parent),
    )
  }

  /** A unit's storage commit (`commit <storage>`). */
  commit(storage: string, subjects: number, parent: SpanLike | undefined): SpanLike {
    return this.#tracer!.startSpan(
      `commit ${storage}`,
      {
        kind: INTERNAL,
        attributes: {
          'db.system.name': storage,
          'db.operation.name': 'commitUnit',
          'substate.commit.subjects': subjects,
        },
      },
      this.#context(parent),
    )
  }

  /** An outbound send (`send <type>`, a producer span). */
  send(event: EventLike, emitter: string, parent: SpanLike | undefined): SpanLike {
    const attributes = eventAttributes(event, 'send', 'send')
    attributes['substate.emitter'] = emitter
    return this.#tracer!.startSpan(
      `send ${event.type}`,
      { kind: PRODUCER, attributes },
      this.#context(parent),
    )
  }

  /** Runs `fn` with `span` as the active span (the application's own spans nest under it). */
  within<T>(span: SpanLike, fn: () => T): T {
    const api = this.#api!
    return api.context.with(api.trace.setSpan(api.context.active(), span), fn)
  }

  /** Ends a span, as failed when `error` is given. */
  end(span: SpanLike, error?: unknown): void {
    if (error !== undefined) fail(span, error)
    span.end()
  }
}

/** Marks a span failed with an exception event. */
export function fail(span: SpanLike, error: unknown): void {
  const e = error instanceof Error ? error : new Error(String(error))
  span.recordException(e)
  span.setStatus({ code: STATUS_ERROR, message: e.message })
}

/** The Distributed Tracing extension attributes of a span (`traceparent`, `tracestate`). */
export function traceContext(span: SpanLike): Record<string, string> {
  const sc = span.spanContext()
  const out: Record<string, string> = {
    traceparent: `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`,
  }
  const state = sc.traceState?.serialize()
  if (state) out.tracestate = state
  return out
}

/** The remote parent carried by an event's `traceparent` (W3C Trace Context), if valid. */
export function remoteContext(
  extensions: Readonly<Record<string, string | number | boolean>> | undefined,
): { traceId: string; spanId: string; flags: number; state: string | undefined } | undefined {
  const tp = extensions?.traceparent
  if (typeof tp !== 'string') return undefined
  const m = TRACEPARENT.exec(tp.trim())
  if (m === null) return undefined
  const [, version, traceId, spanId, flags, rest] = m
  if (version === 'ff' || (version === '00' && rest !== undefined)) return undefined
  if (/^0+$/.test(traceId!) || /^0+$/.test(spanId!)) return undefined
  const ts = extensions?.tracestate
  return {
    traceId: traceId!,
    spanId: spanId!,
    flags: Number.parseInt(flags!, 16) & 1,
    state: typeof ts === 'string' && ts !== '' ? ts : undefined,
  }
}
