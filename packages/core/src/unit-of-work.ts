import { RecentKeys } from './_internal.js'
import { type Dispatcher, RESULT, type WorkTracker } from './dispatcher.js'
import { ShutdownError } from './errors.js'
import type { IdentityMap } from './identity-map.js'
import { cloneJson, freezeJson, type JsonValue } from './json.js'
import { KeyedQueue } from './keyed-queue.js'
import { discardUnit, type Scope, scopes, type UnitOfWork } from './scope.js'
import type { SubjectStorage } from './storage.js'
import type { EmitResult, SubstateEvent } from './types.js'

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

/** The outcome of `Container.receive`. */
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

/** What units of work need of their container. */
export interface UnitsHost {
  readonly state: { readonly closing: boolean }
  readonly work: WorkTracker
  storageFor(subject: string): SubjectStorage
}

/**
 * Ingress (`container.receive`): each incoming event is handled in a unit of work. Events for one
 * subject run one at a time in arrival order (a per-subject {@link KeyedQueue}; this is where
 * per-subject ordering of received events comes from), different subjects concurrently up to a
 * limit; a `source`+`id` handled recently is a duplicate; every subject the unit touched is
 * stored before the unit counts as handled, and a failed unit stores nothing it cached.
 */
export class UnitsOfWork {
  readonly #host: UnitsHost
  readonly #dispatcher: Dispatcher
  readonly #subjects: IdentityMap
  readonly #queue: KeyedQueue
  readonly #recent: RecentKeys
  readonly #receiving = new Map<string, Promise<ReceiveResult>>()

  constructor(
    host: UnitsHost,
    dispatcher: Dispatcher,
    subjects: IdentityMap,
    options: { concurrency: number; dedupWindow: number },
  ) {
    this.#host = host
    this.#dispatcher = dispatcher
    this.#subjects = subjects
    this.#queue = new KeyedQueue(options.concurrency)
    this.#recent = new RecentKeys(options.dedupWindow)
  }

  receive(input: IncomingEvent): Promise<ReceiveResult> {
    if (this.#host.state.closing) return Promise.reject(new ShutdownError())
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
        : this.#queue.run(input.subject, () => this.#run(input, key)),
    )
    this.#receiving.set(key, work)
    this.#host.work.enter()
    return work.finally(() => {
      if (this.#receiving.get(key) === work) this.#receiving.delete(key)
      this.#host.work.leave()
    })
  }

  /** One unit: dispatch the event in the unit's scope, then store every subject it touched. */
  async #run(input: IncomingEvent, key: string): Promise<ReceiveResult> {
    if (this.#recent.has(key)) return { status: 'duplicate' }
    const unit: UnitOfWork = { touched: new Set() }
    const subject = this.#subjects.get(input.subject)
    // Frozen, with a copy of its payload: handlers and subscribers share it, none may change it
    // (and the caller's object is left as it was).
    const event: SubstateEvent = Object.freeze({
      id: input.id,
      type: input.type,
      source: input.source,
      subject: input.subject,
      time: input.time ?? Date.now(),
      payload: freezeJson(cloneJson(input.payload as JsonValue)),
      originId: input.originId ?? input.id,
      extra: undefined,
      ...(input.propertyName === undefined ? {} : { propertyName: input.propertyName }),
      ...(input.extensions === undefined ? {} : { extensions: input.extensions }),
    })
    const root: Scope = { depth: -1, originId: event.originId, failures: [], unit }
    let result: EmitResult
    try {
      result = await scopes.run(root, () =>
        this.#dispatcher.dispatch({
          event,
          subject,
          parent: root,
          targets: undefined,
          detach: true,
          value: RESULT,
          check: false,
        }),
      )
    } catch (e) {
      discardUnit(unit)
      return { status: 'failed', error: e instanceof Error ? e : new Error(String(e)) }
    }
    const failed = result.failures.find((f) => !(f.deadLettered && f.durable))
    if (failed) {
      discardUnit(unit)
      return { status: 'failed', result, error: failed.error }
    }
    for (const s of unit.touched) {
      // The unit's own writes only (and any made outside units), keyed by the event, so a
      // redelivery has no second effect even where another process handles it.
      const idempotent = this.#host.storageFor(s.name).capabilities.idempotent
      try {
        await s.store(idempotent ? { idempotencyKey: key, unit } : { unit })
      } catch (e) {
        discardUnit(unit)
        return { status: 'failed', result, error: e as Error }
      }
    }
    this.#recent.add(key)
    return { status: 'handled', result }
  }
}
