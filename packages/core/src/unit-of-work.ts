/*
 * Units of work: what enters from outside (an HTTP CloudEvent, a Pub/Sub message, a timer, a
 * schedule tick) runs in a unit that is serializable across every process sharing the storage and
 * all or nothing across the subjects it touched (DESIGN §3.7, §3.12). A unit reads through views
 * (`unit-state.ts`) and commits once, with one atomic storage operation that checks what it read
 * and applies all its writes and outbound messages. On a conflict its run is thrown away, the
 * stale subjects are reloaded and it runs again, until `conflictTimeout`; then it fails.
 */
import { createHash } from 'node:crypto'
import { RecentKeys } from './_internal.js'
import type { Clock } from './clock.js'
import { ConflictError, ShutdownError } from './errors.js'
import { cloneJson, freezeJson, type JsonValue } from './json.js'
import { KeyedQueue } from './keyed-queue.js'
import { eventFields } from './logger.js'
import type { Scope } from './scope.js'
import type { SpanLike } from './telemetry.js'
import type { EmitResult, HandlerFailure, SubstateEvent } from './types.js'
import { type CommitHost, type Stored, UnitCommitter, type UnitSubject } from './unit-committer.js'
import { UnitState as Unit, type UnitState } from './unit-state.js'

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
  /**
   * For property events sent by another service (`subject-property-changed`/`-deleted`); taken
   * from the payload's `property_name` when absent.
   */
  readonly propertyName?: string
}

/** The outcome of `container.receive`. */
export interface ReceiveResult {
  /**
   * `handled`: handlers succeeded (or failures were durably dead-lettered) and everything the unit
   * wrote was stored, in one atomic commit: acknowledge. `duplicate`: this `source`+`id` was
   * already handled: acknowledge. `failed`: do not acknowledge; nothing the unit wrote was stored.
   */
  readonly status: 'handled' | 'duplicate' | 'failed'
  readonly result?: EmitResult
  /** Why it failed: the first undead-lettered failure's error, a conflict, or the storage error. */
  readonly error?: Error
}

/** What units need of their container. */
export interface UnitHost extends CommitHost {
  /** Dispatches the root event of a unit in `root` (a scope carrying the unit). */
  dispatch(event: SubstateEvent, root: Scope): Promise<EmitResult>
  readonly closing: boolean
  /** Counts a unit in flight (for the drain). */
  begin(): void
  end(): void
  /** The `time` of a received event that has none. */
  readonly clock: Clock
}

/** Options of units of work. */
export interface UnitOptions {
  /** Units handled at once (across subjects). @default 64 */
  readonly concurrency?: number
  /** Handled `source`+`id` pairs remembered to drop duplicates. @default 10_000 */
  readonly dedupWindow?: number
  /** How long a unit is run again after conflicts before it fails, in ms. @default 10_000 */
  readonly conflictTimeout?: number
}

/** How a unit ended: stored (or a duplicate), or failed. */
type Ran = Exclude<Stored, { kind: 'conflict' }>

/** Property events carry their property in the payload, also when they come from elsewhere. */
const PROPERTY_EVENTS = new Set(['subject-property-changed', 'subject-property-deleted'])

/**
 * The key of an event for deduplication and idempotency: `source` and `id` joined unambiguously
 * (length-prefixed), hashed when long so the dedup window holds bounded keys.
 */
export function eventKey(source: string, id: string): string {
  const key = `${source.length}:${source}${id}`
  return key.length <= 200 ? key : `#${createHash('sha256').update(key).digest('base64url')}`
}

/** What a run of a unit resolves with: its failures, or the `EmitResult` of its root dispatch. */
type RunBody = (
  unit: UnitState,
  span: SpanLike | undefined,
) => Promise<readonly HandlerFailure[] | EmitResult>

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Receives events into units of work and runs units (ingress, batches). */
export class UnitsOfWork {
  readonly #host: UnitHost
  readonly #committer: UnitCommitter
  readonly #queue: KeyedQueue
  readonly #recent: RecentKeys
  readonly #receiving = new Map<string, Promise<ReceiveResult>>()
  readonly #timeout: number

  constructor(
    host: UnitHost,
    { concurrency = 64, dedupWindow = 10_000, conflictTimeout = 10_000 }: UnitOptions,
  ) {
    if (!(conflictTimeout >= 0))
      throw new TypeError(`conflictTimeout must be >= 0 ms, got ${conflictTimeout}`)
    this.#host = host
    this.#committer = new UnitCommitter(host)
    this.#queue = new KeyedQueue(concurrency)
    this.#recent = new RecentKeys(dedupWindow)
    this.#timeout = conflictTimeout
  }

  receive(input: IncomingEvent): Promise<ReceiveResult> {
    if (this.#host.closing) return Promise.reject(new ShutdownError())
    for (const f of ['id', 'source', 'type', 'subject'] as const) {
      if (typeof input?.[f] !== 'string' || input[f] === '') {
        throw new TypeError(`receive(): the event's ${f} must be a non-empty string`)
      }
    }
    const key = eventKey(input.source, input.id)
    if (this.#recent.has(key)) return Promise.resolve({ status: 'duplicate' })
    const running = this.#receiving.get(key)
    this.#host.begin()
    const handle = (): Promise<ReceiveResult> =>
      this.#queue.run(input.subject, () => this.#receive(input, key))
    // A concurrent delivery of the same event waits for the first: duplicate if it succeeded.
    const work =
      running === undefined
        ? handle()
        : running.then((first) =>
            first.status === 'handled' || first.status === 'duplicate'
              ? ({ status: 'duplicate' } as const)
              : handle(),
          )
    this.#receiving.set(key, work)
    const settled = (): void => {
      if (this.#receiving.get(key) === work) this.#receiving.delete(key)
      this.#host.end()
    }
    return work.then(
      (r) => {
        settled()
        return r
      },
      (e: unknown) => {
        settled()
        throw e
      },
    )
  }

  #receive(input: IncomingEvent, key: string): Promise<ReceiveResult> {
    if (this.#recent.has(key)) return Promise.resolve({ status: 'duplicate' })
    let result: EmitResult | undefined
    const body: RunBody = (unit, span) => {
      const event = rootEvent(input, this.#host.clock)
      const root: Scope = { depth: -1, originId: event.originId, failures: [], unit, span }
      return this.#host.dispatch(event, root).then((r) => (result = r))
    }
    return this.#run(key, input.subject, body, input).then((ran): ReceiveResult => {
      if (ran.kind === 'failed') return { status: 'failed', result, error: ran.error }
      this.#recent.add(key)
      return ran.status === 'duplicate' ? { status: 'duplicate' } : { status: 'handled', result }
    })
  }

  /**
   * Runs `body` as a unit of work until it commits, fails, or conflicts past the deadline. `body`
   * runs once per attempt with a new unit and resolves with the failures of its cascade; a
   * failure not durably dead-lettered fails the unit (nothing is stored), unless what the run
   * read had changed meanwhile (then it runs again on fresh data).
   */
  run(
    key: string | undefined,
    home: string,
    body: (unit: UnitState, span: SpanLike | undefined) => Promise<readonly HandlerFailure[]>,
    event?: IncomingEvent,
  ): Promise<Ran> {
    return this.#run(key, home, body, event)
  }

  /** The attempts of a unit, in one async frame: each await is a promise (and hooks) per unit. */
  async #run(
    key: string | undefined,
    home: string,
    body: RunBody,
    event: IncomingEvent | undefined,
  ): Promise<Ran> {
    const started = performance.now()
    const host = this.#host
    const telemetry = host.telemetry
    const span = telemetry.on ? telemetry.unit(event, home) : undefined
    let ran: Stored | undefined
    try {
      // Real time, not the container's clock: conflicts are between writers running for real.
      const deadline = Date.now() + this.#timeout
      for (let attempt = 1; ; attempt++) {
        const unit = new Unit(key)
        try {
          let out: readonly HandlerFailure[] | EmitResult | undefined
          let finished = false
          try {
            out = await body(unit, span)
            finished = true
          } catch (e) {
            ran = { kind: 'failed', error: e instanceof Error ? e : new Error(String(e)) }
          }
          if (finished) {
            const failures = Array.isArray(out) ? out : (out as EmitResult).failures
            const failed = failures.find((f) => !(f.deadLettered && f.durable))
            ran =
              failed === undefined
                ? await this.#committer.commit(unit, home, span)
                : await this.#failed(unit, home, failed.error)
          }
        } finally {
          for (const [state] of unit.touched()) (state as UnitSubject).leave()
        }
        if (ran!.kind !== 'conflict') return ran as Ran
        const conflict = ran as Extract<Stored, { kind: 'conflict' }>
        host.metrics.conflicts++
        span?.addEvent('substate.unit.rerun', { 'substate.attempt': attempt })
        if (Date.now() >= deadline || host.closing) {
          ran = this.#gaveUp(conflict, home, attempt, event)
          return ran
        }
        // The first retry at once (the stale subjects were just reloaded), then jittered backoff.
        if (attempt > 1) await sleep(Math.random() * Math.min(2 ** attempt, 250))
      }
    } finally {
      host.metrics.units.observe((performance.now() - started) / 1000)
      if (span !== undefined) {
        if (ran?.kind === 'done') span.setAttribute('substate.unit.status', ran.status)
        telemetry.end(span, ran?.kind === 'failed' ? ran.error : undefined)
      }
    }
  }

  /** A handler failed: a failure computed from stale data is a conflict (checked first). */
  async #failed(unit: UnitState, home: string, error: Error): Promise<Stored> {
    if (
      this.#host.storageFor(home).commitUnit !== undefined &&
      (await this.#committer.stale(unit, home))
    )
      return { kind: 'conflict', failure: error }
    return { kind: 'failed', error }
  }

  /** A unit kept conflicting until its deadline (or the container closing): it fails. */
  #gaveUp(
    conflict: Extract<Stored, { kind: 'conflict' }>,
    home: string,
    attempts: number,
    event: IncomingEvent | undefined,
  ): Ran {
    const fields = {
      ...(event === undefined ? { subject: home } : eventFields(event)),
      attempts,
      conflictTimeout: this.#timeout,
    }
    if (conflict.failure !== undefined) {
      this.#host.log.warn(
        { ...fields, err: conflict.failure },
        'a unit of work failed on stale data and kept conflicting: it gave up',
      )
      return { kind: 'failed', error: conflict.failure }
    }
    const error = new ConflictError(
      this.#host.storageFor(home).name,
      home,
      attempts,
      'the subjects it read kept changing (other units or processes wrote them)',
    )
    this.#host.log.warn({ ...fields, err: error }, error.message)
    return { kind: 'failed', error }
  }
}

/** The root event of a received unit. */
function rootEvent(input: IncomingEvent, clock: Clock): SubstateEvent {
  // Frozen, with a copy of its payload: handlers and subscribers share it, none may change it
  // (and the caller's object is left as it was).
  const event: { -readonly [K in keyof SubstateEvent]: SubstateEvent[K] } = {
    id: input.id,
    type: input.type,
    source: input.source,
    subject: input.subject,
    time: input.time ?? clock.now(),
    payload: frozenCopy(input.payload),
    originId: input.originId ?? input.id,
    extra: undefined,
  }
  let propertyName = input.propertyName
  const payload = input.payload as Record<string, unknown> | undefined
  if (
    PROPERTY_EVENTS.has(input.type) &&
    typeof payload === 'object' &&
    payload !== null &&
    !Array.isArray(payload)
  ) {
    // As for local property events: from the payload `{ property_name, old_value, value }`.
    if (propertyName === undefined && typeof payload.property_name === 'string')
      propertyName = payload.property_name
    const oldValue = payload.old_value ?? undefined
    const newValue =
      input.type === 'subject-property-changed' ? (payload.value ?? undefined) : undefined
    if (propertyName !== undefined) event.propertyName = propertyName
    if (oldValue !== undefined) event.oldValue = frozenCopy(oldValue)
    if (newValue !== undefined) event.newValue = frozenCopy(newValue)
  } else if (propertyName !== undefined) event.propertyName = propertyName
  if (input.extensions !== undefined) event.extensions = Object.freeze({ ...input.extensions })
  return Object.freeze(event)
}

const frozenCopy = <T>(v: unknown): T => freezeJson(cloneJson(v as JsonValue)) as T
