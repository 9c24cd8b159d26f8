import type { JsonValue } from './json.js'
import type { AnySubject, EmitResult, PayloadOf, Subject, SubstateEvent } from './types.js'

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
  readonly subject?: AnySubject | string
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

/** `emit`: dispatch an event about a subject; see `Container.emit`. */
export type Emit<E> = <const T extends string>(
  type: T,
  subject: AnySubject | string,
  payload?: PayloadOf<E, T>,
  options?: EmitOptions,
) => Promise<EmitResult>

/** How a context emits nested events (the container's emitter). */
export interface NestedEmitter {
  /** `emit` from a handler's context: the nested event keeps that context's origin id. */
  emitFrom(
    originId: string,
    type: string,
    subject: AnySubject | string,
    payload: unknown,
    options: EmitOptions | undefined,
  ): Promise<EmitResult>
}

/** The {@link EventContext} of one event. */
export class Context implements EventContext {
  readonly event: SubstateEvent
  readonly subject: Subject
  readonly signal: AbortSignal
  readonly #emitter: NestedEmitter
  #metadata: Map<string, unknown> | undefined
  /** The dispatcher's state of this event, passed through the (shared) middleware chain. */
  through: unknown

  // Fields are read through the event: a context is built per event, on the hot path.
  constructor(emitter: NestedEmitter, event: SubstateEvent, subject: Subject, signal: AbortSignal) {
    this.#emitter = emitter
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
    return this.#emitter.emitFrom(this.event.originId, type, subject, payload, options)
  }
}

/** A derived context for one handler attempt with its own (timeout) signal. */
export const withSignal = (ctx: EventContext, signal: AbortSignal): EventContext =>
  Object.create(ctx, { signal: { value: signal } }) as EventContext
