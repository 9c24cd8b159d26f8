/*
 * How a finished run of a unit of work is stored (DESIGN §3.7, §3.12): what it read and wrote,
 * grouped by storage, in one atomic `commitUnit` per storage (or subject by subject on a storage
 * without it); on a conflict the stale subjects are reloaded from the commit's answer; once stored,
 * the subjects' caches take the writes and the held events and sends go out.
 *
 * Built from callbacks rather than nested async functions: every received event goes through here,
 * and each promise costs (AsyncLocalStorage's hooks are on in every container).
 */
import { isSubstateError, StorageError } from './errors.js'
import { type JsonValue, jsonEqual } from './json.js'
import type { Logger } from './logger.js'
import type { Metrics } from './metrics.js'
import type {
  Change,
  OutboxMessage,
  SubjectSnapshot,
  SubjectStorage,
  UnitCommit,
  UnitCommitResult,
  UnitEntry,
} from './storage.js'
import type { SpanLike, Telemetry } from './telemetry.js'
import type { HeldSend, UnitState, UnitView } from './unit-state.js'

/** A subject state as units use it. */
export interface UnitSubject {
  readonly name: string
  unitCommitted(view: UnitView): void
  reloadFrom(snap: SubjectSnapshot): void
  leave(): void
}

/** What the commit of a unit needs of its container. */
export interface CommitHost {
  subject(name: string): UnitSubject
  storageFor(subject: string): SubjectStorage
  /** Publishes a committed unit's events (`events$`, the event log). */
  publish(event: UnitState['events'][number]): void
  /**
   * Hands a committed unit's held sends to the outbox relay; resolves once each was tried (a
   * failed one stays in the outbox and is tried again later).
   */
  relay(sends: readonly HeldSend[], storage: SubjectStorage, stored: boolean): Promise<void>
  /** This process as owner of the outbox messages it commits, and how long it holds them. */
  readonly outbox: { readonly owner: string; readonly lease: number }
  readonly metrics: Metrics
  readonly telemetry: Telemetry
  readonly log: Logger
}

/** How the commit of one run ended. */
export type Stored =
  | { readonly kind: 'done'; readonly status: 'handled' | 'duplicate' }
  | { readonly kind: 'failed'; readonly error: Error }
  /** What it read changed; `failure`: a handler failed too (reported if the deadline passes). */
  | { readonly kind: 'conflict'; readonly failure?: Error }

type GroupResult = 'applied' | 'duplicate' | 'conflict' | Error

interface Group {
  readonly entries: UnitEntry[]
  readonly outbox: OutboxMessage[]
  readonly writes: boolean
}

const HANDLED: Stored = Object.freeze({ kind: 'done', status: 'handled' })
const DUPLICATE: Stored = Object.freeze({ kind: 'done', status: 'duplicate' })
const CONFLICT: Stored = Object.freeze({ kind: 'conflict' })

/** A value a unit read changed before its (subject by subject) commit. */
class StaleRead extends Error {}

/** Stores finished runs of units of work. */
export class UnitCommitter {
  readonly #host: CommitHost

  constructor(host: CommitHost) {
    this.#host = host
  }

  /**
   * Stores what `unit` read and wrote, all or nothing per storage, and once stored publishes its
   * events, hands its sends to the relay and runs its `committed` callbacks.
   */
  commit(unit: UnitState, home: string, span: SpanLike | undefined): Promise<Stored> {
    const homeStorage = this.#host.storageFor(home)
    const groups = unit.commits((s) => this.#host.storageFor(s), homeStorage)
    let effects = false
    for (const g of groups.values()) if (g.writes || g.outbox.length > 0) effects = true
    if (!effects) return Promise.resolve(this.#committed(unit, homeStorage, false))
    return this.#groups([...groups], 0, unit, home, span, false, homeStorage)
  }

  /** Stores the groups from `i` on, one after another (each storage's part atomic). */
  #groups(
    list: readonly [SubjectStorage, Group][],
    i: number,
    unit: UnitState,
    home: string,
    span: SpanLike | undefined,
    duplicate: boolean,
    homeStorage: SubjectStorage,
  ): Promise<Stored> {
    const [storage, g] = list[i]!
    return this.#group(storage, g, unit, home, span).then((r) => {
      if (r === 'conflict') return CONFLICT
      if (r instanceof Error) return { kind: 'failed', error: r }
      const dup = duplicate || r === 'duplicate'
      return i + 1 < list.length
        ? this.#groups(list, i + 1, unit, home, span, dup, homeStorage)
        : this.#committed(unit, homeStorage, dup)
    })
  }

  /** Once stored: the caches take the writes, then events, sends and callbacks go out. */
  #committed(unit: UnitState, homeStorage: SubjectStorage, duplicate: boolean): Stored {
    if (duplicate) return DUPLICATE
    for (const [state, view] of unit.touched())
      if (view.wrote) (state as UnitSubject).unitCommitted(view)
    for (const e of unit.events) this.#host.publish(e)
    // Sent after the commit, without holding up the unit's acknowledgment: a slow or failing
    // receiver must not stall ingress; what fails stays in the outbox and is sent again later.
    if (unit.sends.length > 0)
      void this.#host.relay(unit.sends, homeStorage, homeStorage.commitUnit !== undefined)
    for (const fn of unit.committed) fn()
    return HANDLED
  }

  /** One storage's part of a unit's commit, timed and traced. */
  #group(
    storage: SubjectStorage,
    g: Group,
    unit: UnitState,
    home: string,
    parent: SpanLike | undefined,
  ): Promise<GroupResult> {
    const host = this.#host
    const telemetry = host.telemetry
    const span = telemetry.on ? telemetry.commit(storage.name, g.entries.length, parent) : undefined
    const started = performance.now()
    const done = (r: GroupResult): GroupResult => {
      host.metrics.commits.observe((performance.now() - started) / 1000)
      if (span !== undefined) {
        if (r === 'conflict') span.addEvent('substate.conflict')
        else if (!(r instanceof Error)) span.setAttribute('substate.commit.status', r)
        telemetry.end(span, r instanceof Error ? r : undefined)
      }
      return r
    }
    const failed = (e: unknown): GroupResult => {
      const error = storageError(storage, home, e)
      host.log.warn(
        { storage: storage.name, subject: home, err: error },
        'a unit of work could not be stored',
      )
      return done(error)
    }
    if (storage.commitUnit === undefined)
      return this.#commitBySubject(storage, unit).then(done, failed)
    const commit: UnitCommit =
      g.outbox.length === 0
        ? unit.key === undefined
          ? { entries: g.entries }
          : { key: unit.key, entries: g.entries }
        : {
            ...(unit.key === undefined ? {} : { key: unit.key }),
            entries: g.entries,
            outbox: g.outbox,
            owner: host.outbox.owner,
            lease: host.outbox.lease,
          }
    let sent: Promise<UnitCommitResult>
    try {
      sent = storage.commitUnit(commit)
    } catch (e) {
      sent = Promise.reject(e)
    }
    return sent.then((out) => {
      if (out.status === 'conflict') this.#refresh(out.stale)
      return done(out.status)
    }, failed)
  }

  /** Whether something the run read changed (a commit that only checks). */
  async stale(unit: UnitState, home: string): Promise<boolean> {
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
