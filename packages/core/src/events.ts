import type { IdGenerator } from './_internal.js'
import { type Clock, systemClock } from './clock.js'
import type { Dispatcher } from './dispatcher.js'
import { RESULT } from './dispatcher.js'
import { ShutdownError } from './errors.js'
import type { Emit, EmitOptions, NestedEmitter } from './event-context.js'
import type { Failures } from './failures.js'
import type { IdentityMap } from './identity-map.js'
import { copyJson, freezeJson, type JsonValue } from './json.js'
import type { Routes } from './routes.js'
import { type Scope, scopes } from './scope.js'
import { SubjectState } from './subject.js'
import type { SubjectEvents } from './subject-host.js'
import {
  type EmitResult,
  type EventMap,
  SUBJECT_PROPERTY_CHANGED,
  SUBJECT_PROPERTY_DELETED,
  type Subject,
  type SubstateEvent,
} from './types.js'

/** An event the engine makes itself (a schedule's tick, a timer), for reports of its failures. */
export const ownEvent = (
  id: string,
  source: string,
  type: string,
  subject: string,
  time: number,
  payload?: unknown,
): SubstateEvent =>
  Object.freeze({
    id,
    type,
    source,
    subject,
    time,
    payload: freezeJson(payload),
    originId: '',
    extra: undefined,
  })

export interface EventsDeps {
  /** The container's `source`. */
  readonly source: string
  readonly ids: IdGenerator
  readonly dispatcher: Dispatcher
  readonly subjects: IdentityMap
  readonly routes: Routes
  readonly failures: Failures
  /** `errorMode: 'throw'`. */
  readonly throws: boolean
  /** Whether the container is closing (top-level emits are refused). */
  readonly state: { readonly closing: boolean }
  /** Stamps the events' `time`. */
  readonly clock: Clock
}

/**
 * Builds the events of a container and hands them to the dispatcher: top-level `emit`,
 * `ctx.emit` (nested, same origin id) and the change events of subject writes.
 */
export class Events implements NestedEmitter, SubjectEvents {
  readonly #deps: EventsDeps
  readonly #dispatcher: Dispatcher
  readonly #ids: IdGenerator
  readonly #source: string
  readonly #throws: boolean
  readonly #clock: Clock
  /** The clock is the system's: `Date.now()` inline (the hot path stamps every event). */
  readonly #systemTime: boolean

  constructor(deps: EventsDeps) {
    this.#deps = deps
    this.#dispatcher = deps.dispatcher
    this.#ids = deps.ids
    this.#source = deps.source
    this.#throws = deps.throws
    this.#clock = deps.clock
    this.#systemTime = deps.clock === systemClock
  }

  readonly emit: Emit<EventMap> = (type, subject, payload, options) =>
    this.emitTop(type, subject, payload, options, undefined)

  emitFrom(
    originId: string,
    type: string,
    subject: Subject | string,
    payload: unknown,
    options: EmitOptions | undefined,
  ): Promise<EmitResult> {
    return this.emitTop(type, subject, payload, options, undefined, originId)
  }

  /** `emit` with a given event id (a request's) and origin id (a nested emit's). */
  emitTop(
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
    const s = typeof subject === 'string' ? this.#deps.subjects.get(subject) : subject
    if (!(s instanceof SubjectState))
      throw new TypeError(
        'emit(): the subject must be a subject name or a container.subject(...) handle',
      )
    const data = payload === undefined ? undefined : copyJson(payload, `the payload of ${type}`)
    const parent = scopes.getStore()
    if (parent === undefined && this.#deps.state.closing) return Promise.reject(new ShutdownError())
    // In a unit of work, ids derive from the unit's key (a re-run, a re-send: the same ids).
    const eventId = id ?? parent?.unit?.nextId() ?? this.#deps.ids.next()
    // Frozen, with its (copied) payload: handlers and subscribers share it, none may change it.
    const event: SubstateEvent = Object.freeze({
      id: eventId,
      type,
      source: this.#deps.source,
      subject: s.name,
      time: this.#clock.now(),
      payload: freezeJson(data),
      // The event at the top of a cascade is its own origin.
      originId: parent === undefined ? eventId : (origin ?? parent.originId),
      extra: options?.extra,
    })
    // Resolved before the first await; a missing target factory rejects the returned promise.
    let targets: ReturnType<Routes['targetsFor']>
    try {
      targets = this.#deps.routes.targetsFor(options)
    } catch (e) {
      return Promise.reject(e)
    }
    return this.#emitEvent(event, s, parent, targets)
  }

  async #emitEvent(
    event: SubstateEvent,
    subject: SubjectState,
    parent: Scope | undefined,
    targets: ReturnType<Routes['targetsFor']>,
  ): Promise<EmitResult> {
    const throws = this.#deps.throws
    const result = await this.#dispatcher.dispatch({
      event,
      subject,
      parent,
      targets,
      detach: throws,
      value: RESULT,
      check: false,
    })
    if (throws && !result.ok) throw this.#deps.failures.aggregate(result)
    return result
  }

  /**
   * Dispatches the change event of one property of `subject` (`newValue` undefined: deleted) in
   * the scope `parent`; resolves with `value` after its cascade (rejects when a handler failed and
   * the container throws on failures at top level). `oldValue` and `newValue` are copies the
   * subject made for this event. The hot path of every `set`: no promise of its own, the payload
   * built here, two freezes (the values' own objects are frozen once, not walked twice).
   */
  propertyChanged<T>(
    subject: Subject,
    property: string,
    oldValue: JsonValue | undefined,
    newValue: JsonValue | undefined,
    extra: Record<string, unknown> | undefined,
    parent: Scope | undefined,
    value: T,
  ): Promise<T> {
    const id = parent?.unit?.nextId() ?? this.#ids.next()
    freezeJson(oldValue)
    freezeJson(newValue)
    const deleted = newValue === undefined
    // Frozen, with its payload and values: handlers and subscribers share it, none may change it.
    const event: SubstateEvent = Object.freeze({
      id,
      type: deleted ? SUBJECT_PROPERTY_DELETED : SUBJECT_PROPERTY_CHANGED,
      source: this.#source,
      subject: subject.name,
      time: this.#systemTime ? Date.now() : this.#clock.now(),
      // KRules sends `old_value: null` for a new property (`ctx.oldValue` stays undefined).
      payload: Object.freeze(
        deleted
          ? { property_name: property, old_value: oldValue }
          : { property_name: property, old_value: oldValue ?? null, value: newValue },
      ),
      originId: parent === undefined ? id : parent.originId,
      extra,
      propertyName: property,
      oldValue,
      newValue,
    })
    return this.#ofSubject(event, subject, parent, value)
  }

  /** Dispatches an event of `subject` itself (`subject-deleted`), like {@link propertyChanged}. */
  subjectEvent<T>(
    subject: Subject,
    type: string,
    payload: unknown,
    parent: Scope | undefined,
    value: T,
  ): Promise<T> {
    const id = parent?.unit?.nextId() ?? this.#ids.next()
    const event: SubstateEvent = Object.freeze({
      id,
      type,
      source: this.#source,
      subject: subject.name,
      time: this.#clock.now(),
      payload: freezeJson(payload),
      originId: parent === undefined ? id : parent.originId,
      extra: undefined,
    })
    return this.#ofSubject(event, subject, parent, value)
  }

  /** Dispatches an event a subject's write made; resolves with the writer's `value`. */
  #ofSubject<T>(
    event: SubstateEvent,
    subject: Subject,
    parent: Scope | undefined,
    value: T,
  ): Promise<T> {
    return this.#dispatcher.dispatch({
      event,
      subject,
      parent,
      targets: undefined,
      detach: false,
      value,
      check: parent === undefined && this.#throws,
    }) as Promise<T>
  }
}
