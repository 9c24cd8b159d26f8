import type { Observable } from 'rxjs'
import type { JsonValue } from './json.js'
import type { Scope } from './scope.js'
import type { SubjectStorage } from './storage.js'
import type { Subject, SubstateEvent, TimerHandle, TimerSpec } from './types.js'

/** How a subject's writes become events (the container's `Events`). */
export interface SubjectEvents {
  /**
   * Dispatches the change event of `property` of `subject` (`newValue` undefined: deleted) in the
   * scope `parent`; resolves with `value` after its cascade (rejects when a handler failed and the
   * container throws on failures at top level). The values are copies made for the event.
   */
  propertyChanged<T>(
    subject: Subject,
    property: string,
    oldValue: JsonValue | undefined,
    newValue: JsonValue | undefined,
    extra: Record<string, unknown> | undefined,
    /** The scope the change happened in (`scopes.getStore()`), read once by the caller. */
    parent: Scope | undefined,
    value: T,
  ): Promise<T>
  /** Dispatches an event of the subject itself (`subject-deleted`), resolving with `value`. */
  subjectEvent<T>(
    subject: Subject,
    type: string,
    payload: unknown,
    parent: Scope | undefined,
    value: T,
  ): Promise<T>
}

/** What a subject (`SubjectState`) needs of its container. */
export interface SubjectHost {
  storageFor(subject: string): SubjectStorage
  /** How writes become events: the container's events (set once, before any subject exists). */
  events: SubjectEvents
  /** The live state for a name (a new one if it was evicted): always a `SubjectState`. */
  live(name: string): Subject
  /** Stores a durable timer firing `type` on `subject`. */
  addTimer(subject: string, type: string, when: TimerSpec, payload: unknown): Promise<TimerHandle>
  readonly events$: Observable<SubstateEvent>
  /** The container's lifecycle: once closing, writes from outside any handler are refused. */
  readonly state: { readonly closing: boolean }
}
