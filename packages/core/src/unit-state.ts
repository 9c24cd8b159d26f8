/*
 * What a unit of work sees and does until it commits. A unit reads the subjects it touches through
 * views: the first read of a property takes its committed value (from the subject's shared cache,
 * or from storage) and remembers it, so that the commit can check nothing it read changed; its
 * writes stay in the views, invisible to every other unit, until one atomic commit applies them
 * all. Events it dispatched reach `events$` and the outbound routes only once it committed, so a
 * run that is discarded (a conflict, a failed attempt) leaves nothing behind.
 */
import type { JsonValue } from './json.js'
import type {
  OutboxMessage,
  PropertyKind,
  UnitCheck,
  UnitEntry,
  UnitNamesCheck,
  UnitWrite,
} from './storage.js'
import type { OutboundEmitter, SubstateEvent } from './types.js'

/** The committed state a view reads from: a subject's shared cache, or a load of its own. */
export interface ViewBase {
  /** The committed value, `undefined` when absent. */
  value(kind: PropertyKind, name: string): JsonValue | undefined
  names(kind: PropertyKind): Iterable<string>
  /** The stored text of a value that does not survive a JSON round trip. */
  raw(kind: PropertyKind, name: string): string | undefined
  /** Why a stored value cannot be read (not JSON), or `undefined`. */
  invalid(kind: PropertyKind, name: string): string | undefined
}

/** `p<name>` / `e<name>`: one key per property of either kind. */
const fieldKey = (kind: PropertyKind, name: string): string => (kind === 'prop' ? 'p' : 'e') + name
const kindOf = (key: string): PropertyKind => (key[0] === 'p' ? 'prop' : 'ext')

/** Written as deleted: distinct from "not written". */
const DELETED: unique symbol = Symbol('deleted')
type Written = JsonValue | typeof DELETED

/** One subject as a unit sees it: what it read (and must still hold) and what it wrote. */
export class UnitView {
  readonly subject: string
  readonly base: ViewBase
  /** Per field key, the committed value the unit first read (`undefined`: absent). */
  readonly #reads = new Map<string, JsonValue | undefined>()
  /** Per field key, the stored text of a read value that does not round-trip. */
  #raw: Map<string, string> | undefined
  /** Per kind, the committed names the unit listed. */
  #names: Map<PropertyKind, string[]> | undefined
  readonly #writes = new Map<string, Written>()
  readonly #unit: UnitState

  constructor(unit: UnitState, subject: string, base: ViewBase) {
    this.#unit = unit
    this.subject = subject
    this.base = base
  }

  /** The property as the unit sees it now (its own write, else the committed value, recorded). */
  read(kind: PropertyKind, name: string): JsonValue | undefined {
    const key = fieldKey(kind, name)
    const written = this.#writes.get(key)
    if (written !== undefined) return written === DELETED ? undefined : written
    return this.#committed(key, kind, name)
  }

  /** Why the committed value of the property cannot be read, unless the unit wrote it. */
  invalid(kind: PropertyKind, name: string): string | undefined {
    return this.#writes.has(fieldKey(kind, name)) ? undefined : this.base.invalid(kind, name)
  }

  #committed(key: string, kind: PropertyKind, name: string): JsonValue | undefined {
    if (this.#reads.has(key)) return this.#reads.get(key)
    // Repeatable within the unit: later reads return what the first one saw.
    const value = this.base.value(kind, name)
    this.#reads.set(key, value)
    const raw = this.base.raw(kind, name)
    if (raw !== undefined) {
      this.#raw ??= new Map()
      this.#raw.set(key, raw)
    }
    return value
  }

  /** The names of one kind as the unit sees them (committed names, recorded, plus its writes). */
  names(kind: PropertyKind): string[] {
    this.#names ??= new Map()
    let committed = this.#names.get(kind)
    if (committed === undefined) {
      committed = [...this.base.names(kind)]
      this.#names.set(kind, committed)
    }
    const out = new Set(committed)
    for (const [key, v] of this.#writes) {
      if (kindOf(key) !== kind) continue
      if (v === DELETED) out.delete(key.slice(1))
      else out.add(key.slice(1))
    }
    return [...out]
  }

  /** Writes the property (`undefined` deletes it); undone by {@link UnitState.rollback}. */
  write(kind: PropertyKind, name: string, value: JsonValue | undefined): void {
    const key = fieldKey(kind, name)
    this.#unit.journal(this, key, this.#writes.get(key))
    this.#writes.set(key, value === undefined ? DELETED : value)
  }

  /** @internal restores a field's write as it was (`undefined`: not written). */
  undo(key: string, previous: Written | undefined): void {
    if (previous === undefined) this.#writes.delete(key)
    else this.#writes.set(key, previous)
  }

  get wrote(): boolean {
    return this.#writes.size > 0
  }

  /** What the commit checks and writes for this subject; `undefined` when nothing. */
  entry(): UnitEntry | undefined {
    if (this.#reads.size === 0 && this.#writes.size === 0 && this.#names === undefined)
      return undefined
    const checks: UnitCheck[] = []
    for (const [key, value] of this.#reads) {
      checks.push({
        kind: kindOf(key),
        name: key.slice(1),
        expect: this.#raw?.get(key) ?? (value === undefined ? null : JSON.stringify(value)),
      })
    }
    const writes: UnitWrite[] = []
    for (const [key, value] of this.#writes) {
      writes.push({
        kind: kindOf(key),
        name: key.slice(1),
        value: value === DELETED ? null : JSON.stringify(value),
      })
    }
    const names: UnitNamesCheck[] | undefined =
      this.#names && [...this.#names].map(([kind, list]) => ({ kind, names: list }))
    return names
      ? { subject: this.subject, checks, names, writes }
      : { subject: this.subject, checks, writes }
  }

  /** The unit's writes, for the shared cache once committed: `[kind, name, value]`. */
  *writes(): Iterable<[PropertyKind, string, JsonValue | undefined]> {
    for (const [key, value] of this.#writes)
      yield [kindOf(key), key.slice(1), value === DELETED ? undefined : value]
  }
}

/** An outbound delivery a unit holds until it committed. */
export interface HeldSend {
  /** Delivers it (through the route's interceptors). */
  readonly send: () => Promise<void>
  /** Names the route or target, so another process can deliver it from the outbox. */
  readonly target: OutboxTarget
  readonly event: SubstateEvent
  /** The message kept in the outbox until it was delivered. */
  readonly message: OutboxMessage
  readonly emitter: OutboundEmitter
}

/** Where an outbox message goes: a route's emitter by name, or an `emit` target. */
export type OutboxTarget =
  | { readonly route: string }
  | { readonly kind: 'dispatchUrl' | 'topic'; readonly target: string }

/** What an outbox message holds. */
export interface OutboxBody {
  readonly target: OutboxTarget
  readonly event: Omit<SubstateEvent, 'extra'>
}

/** The outbox message of a held send: its id is the event's (deterministic) id and the target. */
export function outboxMessage(target: OutboxTarget, event: SubstateEvent): OutboxMessage {
  const { extra: _extra, ...wire } = event
  const name = 'route' in target ? target.route : `${target.kind}:${target.target}`
  const body: OutboxBody = { target, event: wire }
  return { id: `${event.id}>${name}`, body: JSON.stringify(body) }
}

interface Mark {
  readonly journal: number
  readonly events: number
  readonly sends: number
}

/**
 * One run of a unit of work: its views, the events it dispatched and the sends it holds. A run
 * that conflicts is thrown away whole and the unit runs again with a new one.
 */
export class UnitState {
  /** The unit's idempotency key (ingress units), or `undefined`. */
  readonly key: string | undefined
  #ids: string | undefined
  #seq = 0
  readonly #views = new Map<object, UnitView>()
  readonly #journal: Array<[UnitView, string, Written | undefined]> = []
  /** Events dispatched in this run, in order: published once it committed. */
  readonly events: SubstateEvent[] = []
  /** Outbound deliveries held until it committed. */
  readonly sends: HeldSend[] = []
  /** Called once it committed (timers to wake). */
  readonly committed: Array<() => void> = []

  constructor(key: string | undefined) {
    this.key = key
    // Ids of the events a unit emits derive from its key (made on first use), so a re-run, and
    // a re-send from the outbox, carries the same ids and a deduplicating receiver applies them
    // once.
  }

  /** The next event id of this run. */
  nextId(): string {
    this.#ids ??= `u${digest(this.key ?? `${Math.random()}:${Date.now()}`)}`
    return `${this.#ids}-${(this.#seq++).toString(36)}`
  }

  /** The view of a subject (one per subject state), made with `base` on first use. */
  view(state: object, subject: string, base: () => ViewBase): UnitView {
    let v = this.#views.get(state)
    if (v === undefined) {
      v = new UnitView(this, subject, base())
      this.#views.set(state, v)
    }
    return v
  }

  /** The view of a subject state if the unit touched it. */
  viewOf(state: object): UnitView | undefined {
    return this.#views.get(state)
  }

  /** Subject states the unit touched, with their views. */
  touched(): IterableIterator<[object, UnitView]> {
    return this.#views.entries()
  }

  /** @internal records a write so it can be undone. */
  journal(view: UnitView, key: string, previous: Written | undefined): void {
    this.#journal.push([view, key, previous])
  }

  /** A savepoint: writes, events and sends made after it can be undone by {@link rollback}. */
  mark(): Mark {
    return { journal: this.#journal.length, events: this.events.length, sends: this.sends.length }
  }

  /** Undoes what was written, dispatched and held since `mark` (a failed handler attempt). */
  rollback(mark: Mark): void {
    while (this.#journal.length > mark.journal) {
      const [view, key, previous] = this.#journal.pop()!
      view.undo(key, previous)
    }
    this.events.length = mark.events
    this.sends.length = mark.sends
  }

  /**
   * The atomic commit of this run, grouped by storage: entries of subjects the unit read or wrote,
   * and its held sends as outbox messages (with the group of `home`).
   */
  commits<S>(
    storageOf: (subject: string) => S,
    home: S,
  ): Map<S, { entries: UnitEntry[]; outbox: OutboxMessage[]; writes: boolean }> {
    const out = new Map<S, { entries: UnitEntry[]; outbox: OutboxMessage[]; writes: boolean }>()
    const group = (s: S) => {
      let g = out.get(s)
      if (g === undefined) {
        g = { entries: [], outbox: [], writes: false }
        out.set(s, g)
      }
      return g
    }
    for (const v of this.#views.values()) {
      const entry = v.entry()
      if (entry === undefined) continue
      const g = group(storageOf(v.subject))
      g.entries.push(entry)
      if (entry.writes.length > 0) g.writes = true
    }
    if (this.sends.length > 0) {
      const g = group(home)
      for (const s of this.sends) g.outbox.push(s.message)
    }
    return out
  }
}

/**
 * A 64-bit digest of a string as 16 hex digits (two 32-bit FNV-1a lanes with different seeds):
 * not cryptographic, and need not be: it only spreads unit keys into event ids.
 */
function digest(text: string): string {
  let a = 0x811c9dc5
  let b = 0x01000193 ^ text.length
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    a = Math.imul(a ^ c, 0x01000193)
    b = Math.imul(b ^ c, 0x5bd1e995) ^ (b >>> 15)
  }
  return (a >>> 0).toString(16).padStart(8, '0') + (b >>> 0).toString(16).padStart(8, '0')
}
