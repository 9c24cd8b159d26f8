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
import { ConflictError, isSubstateError, ShutdownError, StorageError } from './errors.js'
import { cloneJson, freezeJson, type JsonValue, jsonEqual } from './json.js'
import { KeyedQueue } from './keyed-queue.js'
import { eventFields, type Logger } from './logger.js'
import type { Metrics } from './metrics.js'
import type { Scope } from './scope.js'
import type {
  Change,
  OutboxMessage,
  SubjectSnapshot,
  SubjectStorage,
  UnitCommitResult,
  UnitEntry,
} from './storage.js'
import type { SpanLike, Telemetry } from './telemetry.js'
import type { EmitResult, HandlerFailure, SubstateEvent } from './types.js'
import { type HeldSend, UnitState as Unit, type UnitState, type UnitView } from './unit-state.js'

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

/** A subject state as units use it. */
export interface UnitSubject {
  readonly name: string
  unitCommitted(view: UnitView): void
  reloadFrom(snap: SubjectSnapshot): void
  leave(): void
}

/** What units need of their container. */
export interface UnitHost {
  subject(name: string): UnitSubject
  storageFor(subject: string): SubjectStorage
  /** Dispatches the root event of a unit in `root` (a scope carrying the unit). */
  dispatch(event: SubstateEvent, root: Scope): Promise<EmitResult>
  /** Publishes a committed unit's events (`events$`, the event log). */
  publish(event: SubstateEvent): void
  /**
   * Hands a committed unit's held sends to the outbox relay; resolves once each was tried (a
   * failed one stays in the outbox and is tried again later).
   */
  relay(sends: readonly HeldSend[], storage: SubjectStorage, stored: boolean): Promise<void>
  /** This process as owner of the outbox messages it commits, and how long it holds them. */
  readonly outbox: { readonly owner: string; readonly lease: number }
  readonly closing: boolean
  /** Counts a unit in flight (for the drain). */
  begin(): void
  end(): void
  readonly metrics: Metrics
  readonly telemetry: Telemetry
  readonly log: Logger
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

/** How one run ended. */
type Ran =
  | { readonly kind: 'done'; readonly status: 'handled' | 'duplicate' }
  | { readonly kind: 'failed'; readonly error: Error }
  /** What it read changed; `failure`: a handler failed too (reported if the deadline passes). */
  | { readonly kind: 'conflict'; readonly failure?: Error }

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

/** A value a unit read changed before its (subject by subject) commit. */
class StaleRead extends Error {}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Receives events into units of work and runs units (ingress, batches). */
export class UnitsOfWork {
  readonly #host: UnitHost
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
    // A concurrent delivery of the same event waits for the first: duplicate if it succeeded.
    const work = (running ?? Promise.resolve(undefined)).then((first) =>
      first?.status === 'handled' || first?.status === 'duplicate'
        ? ({ status: 'duplicate' } as const)
        : this.#queue.run(input.subject, () => this.#receive(input, key)),
    )
    this.#receiving.set(key, work)
    this.#host.begin()
    return work.finally(() => {
      if (this.#receiving.get(key) === work) this.#receiving.delete(key)
      this.#host.end()
    })
  }

  async #receive(input: IncomingEvent, key: string): Promise<ReceiveResult> {
    if (this.#recent.has(key)) return { status: 'duplicate' }
    let result: EmitResult | undefined
    const ran = await this.run(
      key,
      input.subject,
      async (unit, span) => {
        const event = rootEvent(input, this.#host.clock)
        const root: Scope = { depth: -1, originId: event.originId, failures: [], unit, span }
        result = await this.#host.dispatch(event, root)
        return result.failures
      },
      input,
    )
    if (ran.kind === 'done') {
      this.#recent.add(key)
      return ran.status === 'duplicate' ? { status: 'duplicate' } : { status: 'handled', result }
    }
    if (ran.kind === 'failed') return { status: 'failed', result, error: ran.error }
    return { status: 'failed', result, error: new Error('unreachable') }
  }

  /**
   * Runs `body` as a unit of work until it commits, fails, or conflicts past the deadline. `body`
   * runs once per attempt with a new unit and resolves with the failures of its cascade; a
   * failure not durably dead-lettered fails the unit (nothing is stored), unless what the run
   * read had changed meanwhile (then it runs again on fresh data).
   */
  async run(
    key: string | undefined,
    home: string,
    body: (unit: UnitState, span: SpanLike | undefined) => Promise<readonly HandlerFailure[]>,
    event?: IncomingEvent,
  ): Promise<Exclude<Ran, { kind: 'conflict' }>> {
    const started = performance.now()
    const telemetry = this.#host.telemetry
    const span = telemetry.on ? telemetry.unit(event, home) : undefined
    let ran: Ran | undefined
    try {
      ran = await this.#runs(key, home, body, span, event)
      return ran
    } finally {
      this.#host.metrics.units.observe((performance.now() - started) / 1000)
      if (span !== undefined) {
        if (ran?.kind === 'done') span.setAttribute('substate.unit.status', ran.status)
        telemetry.end(span, ran?.kind === 'failed' ? ran.error : undefined)
      }
    }
  }

  async #runs(
    key: string | undefined,
    home: string,
    body: (unit: UnitState, span: SpanLike | undefined) => Promise<readonly HandlerFailure[]>,
    span: SpanLike | undefined,
    event: IncomingEvent | undefined,
  ): Promise<Exclude<Ran, { kind: 'conflict' }>> {
    // Real time, not the container's clock: conflicts are between writers running for real.
    const deadline = Date.now() + this.#timeout
    for (let attempt = 1; ; attempt++) {
      const unit = new Unit(key)
      let ran: Ran
      try {
        ran = await this.#attempt(unit, home, body, span)
      } finally {
        for (const [state] of unit.touched()) (state as UnitSubject).leave()
      }
      if (ran.kind !== 'conflict') return ran
      this.#host.metrics.conflicts++
      span?.addEvent('substate.unit.rerun', { 'substate.attempt': attempt })
      if (Date.now() >= deadline || this.#host.closing) {
        const fields = {
          ...(event === undefined ? { subject: home } : eventFields(event)),
          attempts: attempt,
          conflictTimeout: this.#timeout,
        }
        if (ran.failure !== undefined) {
          this.#host.log.warn(
            { ...fields, err: ran.failure },
            'a unit of work failed on stale data and kept conflicting: it gave up',
          )
          return { kind: 'failed', error: ran.failure }
        }
        const error = new ConflictError(
          this.#host.storageFor(home).name,
          home,
          attempt,
          'the subjects it read kept changing (other units or processes wrote them)',
        )
        this.#host.log.warn({ ...fields, err: error }, error.message)
        return { kind: 'failed', error }
      }
      // The first retry at once (the stale subjects were just reloaded), then jittered backoff.
      if (attempt > 1) await sleep(Math.random() * Math.min(2 ** attempt, 250))
    }
  }

  async #attempt(
    unit: UnitState,
    home: string,
    body: (unit: UnitState, span: SpanLike | undefined) => Promise<readonly HandlerFailure[]>,
    span: SpanLike | undefined,
  ): Promise<Ran> {
    let failures: readonly HandlerFailure[]
    try {
      failures = await body(unit, span)
    } catch (e) {
      return { kind: 'failed', error: e instanceof Error ? e : new Error(String(e)) }
    }
    const failed = failures.find((f) => !(f.deadLettered && f.durable))
    const storage = this.#host.storageFor(home)
    if (failed) {
      // A failure computed from stale data is a conflict: check what the run read first.
      if (storage.commitUnit !== undefined && (await this.#stale(unit, home)))
        return { kind: 'conflict', failure: failed.error }
      return { kind: 'failed', error: failed.error }
    }
    return this.#commit(unit, home, span)
  }

  /** Whether something the run read changed (a commit that only checks). */
  async #stale(unit: UnitState, home: string): Promise<boolean> {
    const groups = unit.commits((s) => this.#host.storageFor(s), this.#host.storageFor(home))
    for (const [storage, g] of groups) {
      if (storage.commitUnit === undefined || g.entries.length === 0) continue
      const entries = g.entries.map((e) => ({
        subject: e.subject,
        checks: e.checks,
        ...(e.names ? { names: e.names } : {}),
        writes: [],
      }))
      let r: UnitCommitResult
      try {
        r = await storage.commitUnit({ entries })
      } catch {
        return false
      }
      if (r.status === 'conflict') {
        this.#refresh(r.stale)
        return true
      }
    }
    return false
  }

  async #commit(unit: UnitState, home: string, span: SpanLike | undefined): Promise<Ran> {
    const homeStorage = this.#host.storageFor(home)
    const groups = unit.commits((s) => this.#host.storageFor(s), homeStorage)
    let effects = false
    for (const g of groups.values()) if (g.writes || g.outbox.length > 0) effects = true
    let duplicate = false
    if (effects) {
      for (const [storage, g] of groups) {
        const r = await this.#commitGroup(storage, g, unit, home, span)
        if (r === 'conflict') return { kind: 'conflict' }
        if (r instanceof Error) return { kind: 'failed', error: r }
        if (r === 'duplicate') duplicate = true
      }
    }
    if (duplicate) return { kind: 'done', status: 'duplicate' }
    for (const [state, view] of unit.touched())
      if (view.wrote) (state as UnitSubject).unitCommitted(view)
    for (const e of unit.events) this.#host.publish(e)
    // Sent after the commit, without holding up the unit's acknowledgment: a slow or failing
    // receiver must not stall ingress; what fails stays in the outbox and is sent again later.
    if (unit.sends.length > 0)
      void this.#host.relay(unit.sends, homeStorage, homeStorage.commitUnit !== undefined)
    for (const fn of unit.committed) fn()
    return { kind: 'done', status: 'handled' }
  }

  /** One storage's part of a unit's commit, timed and traced. */
  async #commitGroup(
    storage: SubjectStorage,
    g: { readonly entries: readonly UnitEntry[]; readonly outbox: readonly OutboxMessage[] },
    unit: UnitState,
    home: string,
    parent: SpanLike | undefined,
  ): Promise<'applied' | 'duplicate' | 'conflict' | Error> {
    const telemetry = this.#host.telemetry
    const span = telemetry.on ? telemetry.commit(storage.name, g.entries.length, parent) : undefined
    const started = performance.now()
    let r: 'applied' | 'duplicate' | 'conflict' | Error
    try {
      if (storage.commitUnit === undefined) r = await this.#commitBySubject(storage, unit)
      else {
        const out = await storage.commitUnit({
          ...(unit.key === undefined ? {} : { key: unit.key }),
          entries: g.entries,
          ...(g.outbox.length > 0
            ? {
                outbox: g.outbox,
                owner: this.#host.outbox.owner,
                lease: this.#host.outbox.lease,
              }
            : {}),
        })
        if (out.status === 'conflict') this.#refresh(out.stale)
        r = out.status
      }
    } catch (e) {
      r = storageError(storage, home, e)
      this.#host.log.warn(
        { storage: storage.name, subject: home, err: r },
        'a unit of work could not be stored',
      )
    }
    this.#host.metrics.commits.observe((performance.now() - started) / 1000)
    if (span !== undefined) {
      if (r === 'conflict') span.addEvent('substate.conflict')
      else if (!(r instanceof Error)) span.setAttribute('substate.commit.status', r)
      telemetry.end(span, r instanceof Error ? r : undefined)
    }
    return r
  }

  /**
   * A storage without `commitUnit`: the unit's writes subject by subject, each subject's reads
   * checked by compare-and-set with its writes (not atomic across subjects; subjects the unit
   * only read are not checked).
   */
  async #commitBySubject(
    storage: SubjectStorage,
    unit: UnitState,
  ): Promise<'applied' | 'duplicate' | 'conflict'> {
    let duplicate = false
    for (const [state, view] of unit.touched()) {
      const name = (state as UnitSubject).name
      const entry = view.entry()
      if (entry === undefined || !view.wrote || this.#host.storageFor(name) !== storage) continue
      const expected = new Map(entry.checks.map((c) => [c.kind + c.name, c.expect]))
      const changes: Change[] = []
      const checked = (expect: string, next: (cur: JsonValue | undefined) => JsonValue) => {
        const want = expect === 'null' ? null : (JSON.parse(expect) as JsonValue)
        return (cur: JsonValue | undefined): JsonValue => {
          if (cur === undefined || !jsonEqual(cur, want)) throw new StaleRead()
          return next(cur)
        }
      }
      for (const w of entry.writes) {
        const expect = expected.get(w.kind + w.name)
        expected.delete(w.kind + w.name)
        const value = w.value === null ? undefined : (JSON.parse(w.value) as JsonValue)
        if (value === undefined) changes.push({ op: 'delete', kind: w.kind, name: w.name })
        else if (expect === undefined || expect === null)
          changes.push({ op: 'set', kind: w.kind, name: w.name, value })
        else
          changes.push({
            op: 'update',
            kind: w.kind,
            name: w.name,
            update: checked(expect, () => value),
          })
      }
      for (const [key, expect] of expected) {
        if (expect === null) continue // "absent" cannot be checked by an updater
        const kind = key.startsWith('prop') ? 'prop' : 'ext'
        const prop = key.slice(kind.length)
        changes.push({ op: 'update', kind, name: prop, update: checked(expect, (cur) => cur!) })
      }
      try {
        const r = await storage.commit(name, changes, {
          oldValues: false,
          ...(unit.key !== undefined && storage.capabilities.idempotent
            ? { idempotencyKey: unit.key }
            : {}),
        })
        if (r.duplicate) duplicate = true
      } catch (e) {
        if (!(e instanceof StaleRead || (e as { cause?: unknown })?.cause instanceof StaleRead))
          throw e
        ;(state as UnitSubject).reloadFrom(await storage.load(name))
        return 'conflict'
      }
    }
    return duplicate ? 'duplicate' : 'applied'
  }

  #refresh(stale: Readonly<Record<string, SubjectSnapshot>>): void {
    for (const [name, snap] of Object.entries(stale)) this.#host.subject(name).reloadFrom(snap)
  }
}

/** The root event of a received unit. */
function rootEvent(input: IncomingEvent, clock: Clock): SubstateEvent {
  let propertyName = input.propertyName
  let oldValue: unknown
  let newValue: unknown
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
    oldValue = payload.old_value ?? undefined
    if (input.type === 'subject-property-changed') newValue = payload.value ?? undefined
  }
  // Frozen, with a copy of its payload: handlers and subscribers share it, none may change it
  // (and the caller's object is left as it was).
  const copy = freezeJson(cloneJson(input.payload as JsonValue))
  const of = (v: unknown) => freezeJson(cloneJson(v as JsonValue))
  return Object.freeze({
    id: input.id,
    type: input.type,
    source: input.source,
    subject: input.subject,
    time: input.time ?? clock.now(),
    payload: copy,
    originId: input.originId ?? input.id,
    extra: undefined,
    ...(propertyName === undefined ? {} : { propertyName }),
    ...(oldValue === undefined ? {} : { oldValue: of(oldValue) }),
    ...(newValue === undefined ? {} : { newValue: of(newValue) }),
    ...(input.extensions === undefined
      ? {}
      : { extensions: Object.freeze({ ...input.extensions }) }),
  })
}

const storageError = (storage: SubjectStorage, subject: string, e: unknown): Error =>
  isSubstateError(e)
    ? (e as Error)
    : new StorageError(
        storage.name,
        'commit',
        subject,
        e instanceof Error ? e.message : String(e),
        {
          cause: e,
        },
      )
