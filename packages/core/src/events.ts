import type { IdGenerator } from './_internal.js'
import type { Clock } from './clock.js'
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
import type { EmitResult, EventMap, Subject, SubstateEvent } from './types.js'

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
export class Events implements NestedEmitter {
  readonly #deps: EventsDeps
  readonly #dispatcher: Dispatcher

  constructor(deps: EventsDeps) {
    this.#deps = deps
    this.#dispatcher = deps.dispatcher
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
      time: this.#deps.clock.now(),
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
   * Dispatches a change event of `subject` in the scope `parent`; resolves with `value` after its
   * cascade (rejects when a handler failed and the container throws on failures at top level).
   * Resolves with the writer's value itself: no promise of its own per change (the hot path).
   */
  emitChange<T>(
    subject: SubjectState,
    type: string,
    payload: unknown,
    change: { propertyName: string; oldValue?: JsonValue; newValue?: JsonValue } | undefined,
    extra: Record<string, unknown> | undefined,
    parent: Scope | undefined,
    value: T,
  ): Promise<T> {
    const id = parent?.unit?.nextId() ?? this.#deps.ids.next()
    // Frozen, with its payload and values (copies the subject made for this event): handlers and
    // subscribers share it, none may change it.
    // A property event's payload holds the same old and new values: freezing those and the
    // payload's own object is enough (no second walk; this is the hot path of every `set`).
    if (change === undefined) freezeJson(payload)
    else {
      freezeJson(change.oldValue)
      freezeJson(change.newValue)
      Object.freeze(payload)
    }
    const event: SubstateEvent = Object.freeze({
      id,
      type,
      source: this.#deps.source,
      subject: subject.name,
      time: this.#deps.clock.now(),
      payload,
      originId: parent === undefined ? id : parent.originId,
      extra,
      propertyName: change?.propertyName,
      oldValue: change?.oldValue,
      newValue: change?.newValue,
    })
    return this.#dispatcher.dispatch({
      event,
      subject,
      parent,
      targets: undefined,
      detach: false,
      value,
      check: parent === undefined && this.#deps.throws,
    }) as Promise<T>
  }
}
