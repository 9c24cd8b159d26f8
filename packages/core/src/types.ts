import type { Observable } from 'rxjs'
import type { JsonValue } from './json.js'

/** Emitted by `subject.set` when a property's value changed. Wire payload: `{ property_name, old_value, value }`. */
export const SUBJECT_PROPERTY_CHANGED = 'subject-property-changed'
/** Emitted by `subject.delete` when the property existed. Wire payload: `{ property_name, old_value }`. */
export const SUBJECT_PROPERTY_DELETED = 'subject-property-deleted'
/** Emitted by `subject.flush()`. Wire payload: `{ props, ext_props }`. */
export const SUBJECT_DELETED = 'subject-deleted'

/** Payload of {@link SUBJECT_PROPERTY_CHANGED}, as KRules puts it on the wire. */
export interface PropertyChangedPayload {
  readonly property_name: string
  readonly old_value: JsonValue | undefined
  readonly value: JsonValue
}
/** Payload of {@link SUBJECT_PROPERTY_DELETED}. */
export interface PropertyDeletedPayload {
  readonly property_name: string
  readonly old_value: JsonValue
}
/** Payload of {@link SUBJECT_DELETED}. */
export interface SubjectDeletedPayload {
  readonly props: Record<string, JsonValue>
  readonly ext_props: Record<string, JsonValue>
}

/**
 * A map from event type to payload type, given to `createContainer<Events>()` to type `on` and
 * `emit`. Types not in the map stay `unknown`.
 */
export type EventMap = Record<string, unknown>

/** The built-in events, always part of a container's event map. */
export interface BuiltinEvents {
  [SUBJECT_PROPERTY_CHANGED]: PropertyChangedPayload
  [SUBJECT_PROPERTY_DELETED]: PropertyDeletedPayload
  [SUBJECT_DELETED]: SubjectDeletedPayload
}

/** The payload type of event type `T` in map `E` (`unknown` for types outside the map or globs). */
export type PayloadOf<E, T> = T extends keyof E
  ? E[T]
  : T extends keyof BuiltinEvents
    ? BuiltinEvents[T]
    : unknown

/** One event, as dispatched and as seen on `container.events$`. Values are copies. */
export interface SubstateEvent<P = unknown> {
  /** Unique per `source` (CloudEvents `id`). */
  readonly id: string
  readonly type: string
  /** CloudEvents `source`: the container's source, or the sender's for received events. */
  readonly source: string
  /** The subject's name (CloudEvents `subject`). */
  readonly subject: string
  /** Milliseconds since the epoch (CloudEvents `time`). */
  readonly time: number
  readonly payload: P
  /** The id of the event at the top of this cascade (CloudEvents extension `originid`). */
  readonly originId: string
  /** Context passed to `set`/`delete`/`emit` (audit trail, business reason). Not sent on the wire. */
  readonly extra: Readonly<Record<string, unknown>> | undefined
  /** Property events: the property's name. */
  readonly propertyName?: string
  /** Property events: the value replaced (`undefined` for a new property). */
  readonly oldValue?: JsonValue
  /** Property-changed events: the value written. */
  readonly newValue?: JsonValue
  /** CloudEvents extension attributes this event arrived with (received events only). */
  readonly extensions?: Readonly<Record<string, string | number | boolean>>
}

/**
 * A named subject: schema-less properties (emitting events) and extended properties (metadata,
 * no events). A handle is cheap and loads lazily; the container keeps one live state per name.
 */
export interface Subject {
  readonly name: string
  /**
   * Reads a property. Throws `PropertyNotFoundError` when missing and no `default` is given.
   * `{ cache: false }` reads storage instead of the cached state.
   */
  get<T extends JsonValue = JsonValue>(property: string, options?: GetOptions<T>): Promise<T>
  /**
   * Sets a property to a JSON value, or applies an updater atomically: `(current) => next`, where
   * `current` is a copy of the value (`undefined` when absent) — give the parameter a default or a
   * type: `(n = 0) => n + 1`, `(list: string[] = []) => [...list, x]`. Updaters must be pure: storage
   * may run them again when another writer won a race.
   *
   * Emits `subject-property-changed` when the value changed (deep equality) and not muted, and
   * resolves with the new value after that event's handlers (and their cascade) finished. A value
   * that is not JSON throws a `TypeError` naming the property, synchronously. In cache mode (the
   * default) the change is pending until `store()` (or the end of the unit of work); with
   * `cache: false` it is written now and the event carries exactly the values replaced and written.
   */
  set<T extends JsonValue>(
    property: string,
    update: (current: never) => T,
    options?: SetOptions,
  ): Promise<T>
  set<T extends JsonValue>(property: string, value: T, options?: SetOptions): Promise<T>
  /** Deletes a property; emits `subject-property-deleted` when it existed. Resolves whether it existed. */
  delete(property: string, options?: WriteOptions): Promise<boolean>
  has(property: string): Promise<boolean>
  keys(): Promise<string[]>
  /** Sets an extended property (metadata: no events; exported as CloudEvent extensions). Updaters as in `set`. */
  setExt<T extends JsonValue>(
    property: string,
    update: (current: never) => T,
    options?: { cache?: boolean },
  ): Promise<T>
  setExt<T extends JsonValue>(property: string, value: T, options?: { cache?: boolean }): Promise<T>
  getExt<T extends JsonValue = JsonValue>(property: string, options?: GetOptions<T>): Promise<T>
  deleteExt(property: string, options?: { cache?: boolean }): Promise<boolean>
  getExtProps(): Promise<Record<string, JsonValue>>
  /** Commits the pending cached writes, all or nothing. On failure they stay pending and it rejects. */
  store(): Promise<void>
  /**
   * Reloads the cached state from storage, to see what other processes (replicas, a KRules
   * service) wrote; writes still pending here stay on top. `get(p, { cache: false })` reads one
   * property from storage instead. Inside a unit of work it does nothing: a unit's reads are
   * checked when it commits, and it runs again on fresh data if they changed.
   */
  refresh(): Promise<void>
  /** Deletes the subject from storage and emits `subject-deleted`. */
  flush(): Promise<void>
  /**
   * A durable timer: emits `type` on this subject `at` a time or `in` ms, once, even across
   * restarts and replicas (it is kept in storage). Resolves once stored, with a handle to cancel.
   *
   * @example
   * await subject.schedule('device.check', { in: 60_000 }, { reason: 'silence' })
   */
  schedule(type: string, when: TimerSpec, payload?: unknown): Promise<TimerHandle>
  /** Whether cached writes are waiting for `store()`. */
  readonly dirty: boolean
  /** The cached state (what was loaded or set), for logs and JSON responses. */
  toJSON(): { name: string; props: Record<string, JsonValue>; ext: Record<string, JsonValue> }
  /** Property events of this subject (changed and deleted). */
  readonly changes$: Observable<SubstateEvent>
  /** New values of one property (`undefined` when deleted). */
  watch(property: string): Observable<JsonValue | undefined>
}

/**
 * The constraint on declared property types: every property a JSON value (optional properties
 * allowed: a property may be absent). Type aliases and interfaces both fit.
 */
export type PropertyMap<P = Record<string, JsonValue>> = { readonly [K in keyof P]?: JsonValue }

/**
 * Property types per subject-name pattern, declared once at the container:
 * `createContainer<Events, { 'device:*': DeviceProps }>()`. A `*` in a pattern stands for any
 * text (`'device:*'` types `device:1`, `device:eu/42`); other glob syntax is not read here.
 */
export type SubjectMap = { readonly [pattern: string]: object }

/** A pattern of a {@link SubjectMap} as a template literal type: `'device:*'` → `device:${string}`. */
export type NamePattern<P extends string> = P extends `${infer A}*${infer B}`
  ? `${A}${string}${NamePattern<B>}`
  : P

/**
 * The handle `container.subject(name)` returns for a name: typed by the pattern of `S` the name
 * matches, untyped (`Subject`) when none does or the name is not a literal.
 */
export type SubjectOf<S, N extends string> = [MatchingProps<S, N>] extends [never]
  ? Subject
  : TypedSubject<MatchingProps<S, N>>

type MatchingProps<S, N extends string> = string extends N
  ? never
  : {
      // An index signature (a map typed as `SubjectMap` itself) declares no pattern.
      [K in keyof S & string]: string extends K
        ? never
        : N extends NamePattern<K>
          ? S[K] extends PropertyMap<S[K]>
            ? S[K]
            : never
          : never
    }[keyof S & string]

/** Property names of `P` (string keys). */
type Key<P> = keyof P & string
/** The type of a property's value (an optional property's without `undefined`). */
type Value<P, K extends keyof P> = Exclude<P[K], undefined>

/** A property event of a typed subject: its name and values typed together. */
export type PropertyEvent<P> = {
  [K in Key<P>]: Omit<SubstateEvent, 'propertyName' | 'oldValue' | 'newValue'> & {
    readonly propertyName: K
    readonly oldValue?: Value<P, K>
    readonly newValue?: Value<P, K>
  }
}[Key<P>]

/**
 * A subject whose properties have declared types: `get`, `set` (values and updaters), `delete`,
 * `watch` and `changes$` take only the declared names and their types. The same object as the
 * untyped {@link Subject} (types only: no runtime cost, and no runtime check beyond JSON); get
 * one with `container.subject<Props>(name)`, or by name from a container declaring subject types.
 */
export interface TypedSubject<P extends PropertyMap<P>>
  extends Omit<
    Subject,
    'get' | 'set' | 'delete' | 'has' | 'keys' | 'toJSON' | 'changes$' | 'watch'
  > {
  /** Reads a property; `PropertyNotFoundError` when missing and no `default` is given. */
  get<K extends Key<P>>(property: K, options?: GetOptions<Value<P, K>>): Promise<Value<P, K>>
  /** Sets a property to a value, or applies an updater `(current) => next` (see `Subject.set`). */
  set<K extends Key<P>>(
    property: K,
    value: Value<P, K> | ((current: Value<P, K> | undefined) => Value<P, K>),
    options?: SetOptions,
  ): Promise<Value<P, K>>
  delete(property: Key<P>, options?: WriteOptions): Promise<boolean>
  has(property: Key<P>): Promise<boolean>
  keys(): Promise<Key<P>[]>
  toJSON(): { name: string; props: Partial<P>; ext: Record<string, JsonValue> }
  /** Property events of this subject (changed and deleted), typed by property. */
  readonly changes$: Observable<PropertyEvent<P>>
  /** New values of one property (`undefined` when deleted). */
  watch<K extends Key<P>>(property: K): Observable<Value<P, K> | undefined>
}

/** A subject handle, typed or not: what `emit` and `request` take as their subject. */
// biome-ignore lint/suspicious/noExplicitAny: any declared property types
export type AnySubject = Subject | TypedSubject<any>

/** An updater: receives a copy of the current value (`undefined` when absent). Must be pure: it may run more than once. */
export type Updater<T extends JsonValue = JsonValue> = (current: T | undefined) => T

export interface GetOptions<T> {
  /** Returned (copied) when the property is missing, instead of throwing. */
  readonly default?: T
  /**
   * Read the cached state (`true`) or storage (`false`).
   * @default true
   */
  readonly cache?: boolean
}

export interface WriteOptions {
  /**
   * Cached (pending until `store()`) or write-through.
   * @default true
   */
  readonly cache?: boolean
  /**
   * Change the value without emitting an event.
   * @default false
   */
  readonly muted?: boolean
  /** Context for handlers, delivered as `ctx.extra`. */
  readonly extra?: Record<string, unknown>
}
export type SetOptions = WriteOptions

/** One handler failure, as listed in an {@link EmitResult} and passed to `onError` hooks. */
export interface HandlerFailure {
  /** The handler's name, `middleware`, `filter:<handler>` or `route:<emitter>`. */
  readonly handler: string
  readonly event: SubstateEvent
  /** A `HandlerError` whose `cause` is what was thrown. */
  readonly error: Error
  /** How many times the handler ran. */
  readonly attempts: number
  /** True when the event went to a dead-letter sink after the last attempt. */
  readonly deadLettered: boolean
  /** True when the dead-letter sink is durable (counts as handled by ingresses). */
  readonly durable: boolean
}

/** What `emit` resolves with: the event, how many handlers ran, and every failure of the cascade. */
export interface EmitResult {
  readonly event: SubstateEvent
  /** Handlers that ran (filters passed), including retried and failed ones. */
  readonly handled: number
  /** Failures of this event's handlers and of the events they caused, in order of occurrence. */
  readonly failures: readonly HandlerFailure[]
  /** True when nothing failed, or every failure was dead-lettered. */
  readonly ok: boolean
}

/** Retry policy of a handler. */
export interface RetryPolicy {
  /** Total attempts including the first. */
  readonly attempts: number
  /**
   * Delay before retry n (1-based): `initial * factor^(n-1)`, capped at `max`, with ±20 % jitter.
   * @default { initial: 50, factor: 2, max: 5000 }
   */
  readonly backoff?: { readonly initial?: number; readonly factor?: number; readonly max?: number }
}

/** Options of one handler. */
export interface HandlerOptions {
  /** Name in failures, metrics and logs. @default the function's name, or `handler#<n>` */
  readonly name?: string
  /** Unsubscribes when aborted. */
  readonly signal?: AbortSignal
  readonly retry?: RetryPolicy
  /** Per-attempt timeout in ms; `ctx.signal` aborts when it elapses. */
  readonly timeout?: number
  /**
   * Makes the handler a batch handler, called with the contexts of up to `size` events at once:
   * `on('reading.*', { batch: { size: 100, wait: 50 } }, async (ctxs) => ...)`.
   */
  readonly batch?: BatchOptions
}

/**
 * How a batch handler collects events: a batch is handled when it holds `size` events, or `wait`
 * milliseconds after its first event arrived, whichever comes first (at once when the container
 * closes).
 */
export interface BatchOptions {
  readonly size: number
  readonly wait: number
}

/** A dead-letter entry: an event whose handler failed after its last attempt. */
export interface DeadLetter {
  readonly event: SubstateEvent
  readonly handler: string
  readonly error: Error
  readonly attempts: number
  readonly at: number
}

/** A dead letter as a sink lists it: with the id `remove` and `redrive` take. */
export interface StoredDeadLetter extends DeadLetter {
  readonly id: string
}

/** Which dead letters `list` returns (newest first); every given field must match exactly. */
export interface DeadLetterQuery {
  readonly handler?: string
  readonly type?: string
  readonly subject?: string
  /** At most this many. */
  readonly limit?: number
}

/**
 * Where events go when a handler's retries are exhausted: `createMemoryDeadLetters()`,
 * `storageDeadLetters(storage)`, `pubsubDeadLetters(...)` from `@substate/pubsub`, or your own.
 */
export interface DeadLetterSink {
  /** Durable sinks (storage, a topic) let ingresses acknowledge the event; in-memory ones do not. */
  readonly durable: boolean
  put(entry: DeadLetter): Promise<void>
  /** Lists the entries kept, newest first (optional: a topic sink cannot). */
  list?(query?: DeadLetterQuery): Promise<readonly StoredDeadLetter[]>
  /** Removes entries by id; resolves with how many were there (optional, with `list`). */
  remove?(ids: readonly string[]): Promise<number>
}

/** Transport metadata for one outbound delivery (see {@link OutboundEmitter.send}). */
export interface OutboundMeta {
  readonly headers: Readonly<Record<string, string>>
}

/**
 * An outbound transport (HTTP, Pub/Sub): receives events routed to it with `container.route` or
 * `emit(..., { dispatchUrl | topic })`. `send` rejects when delivery failed.
 */
export interface OutboundEmitter {
  readonly name: string
  /**
   * Delivers one event. `meta.headers` (from route interceptors) go out as transport metadata:
   * HTTP request headers, Pub/Sub message attributes; the CloudEvents attributes win over them.
   */
  send(event: SubstateEvent, subject: Subject, meta?: OutboundMeta): Promise<void>
  /** Waits for buffered sends (called by `container.close()`). */
  flush?(): Promise<void>
  close?(): Promise<void>
}

/** When a timer fires: at a time (ms since the epoch, or a `Date`), or in `in` ms from now. */
export type TimerSpec = { readonly at: number | Date } | { readonly in: number }

/** A scheduled timer. */
export interface TimerHandle {
  /** Unique id; the fired event's `id` is `timer:<id>`. */
  readonly id: string
  /** When it is due (ms since the epoch). */
  readonly at: number
  /** Deletes the timer; resolves `false` when it had already fired (or was cancelled). */
  cancel(): Promise<boolean>
}

/** Removes a handler (or hook, route, schedule); also `Disposable` (`using off = on(...)`). */
export type Unsubscribe = (() => void) & Disposable
