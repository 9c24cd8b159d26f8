import { RecentKeys } from './_internal.js'
import { type Clock, systemClock } from './clock.js'
import { StorageError } from './errors.js'
import { cloneJson, type JsonValue } from './json.js'
import { compileGlob } from './router.js'
import type {
  Change,
  CommitOptions,
  CommitResult,
  CommittedChange,
  OutboxMessage,
  OutboxStore,
  PropertyKind,
  SubjectSnapshot,
  SubjectStorage,
  UnitCommit,
  UnitCommitResult,
  UnitEntry,
} from './storage.js'

/** Options of {@link createMemoryStorage}. */
export interface MemoryStorageOptions {
  /**
   * How many idempotency keys are remembered per storage (oldest forgotten first).
   * @default 100_000
   */
  readonly idempotencyWindow?: number
  /**
   * The time of the outbox's leases (when a message nobody delivered may be claimed again): a
   * fake clock in tests (`fakeClock()` from `@substate/core/testing`). A container made without a
   * storage gives its own clock to the memory storage it creates.
   * @default the system clock
   */
  readonly clock?: Clock
}

interface Stored {
  props: Map<string, JsonValue>
  ext: Map<string, JsonValue>
}

/**
 * The embedded default storage: subjects live in this process's memory and are lost on exit.
 * Commits are synchronous under the hood, so they are atomic against every other writer of this
 * process. Values are copied in and out.
 *
 * @example
 * const container = createContainer({ storage: createMemoryStorage() })
 */
export function createMemoryStorage({
  idempotencyWindow = 100_000,
  clock = systemClock,
}: MemoryStorageOptions = {}): SubjectStorage {
  const subjects = new Map<string, Stored>()
  const seenKeys = new RecentKeys(idempotencyWindow)
  /** The outbox: by id, in insertion order (oldest first), with the lease's end (ms). */
  const outbox = new Map<string, { body: string; owner: string; until: number }>()
  let closed = false

  const check = (operation: string, subject?: string): void => {
    if (closed)
      throw new StorageError('storage-memory', operation, subject, 'the storage is closed')
  }
  const mapOf = (s: Stored, kind: PropertyKind) => (kind === 'prop' ? s.props : s.ext)
  const snapshot = (s: Stored | undefined): SubjectSnapshot => ({
    props: s ? Object.fromEntries([...s.props].map(([k, v]) => [k, cloneJson(v)])) : {},
    ext: s ? Object.fromEntries([...s.ext].map(([k, v]) => [k, cloneJson(v)])) : {},
  })

  /** Whether every read of an entry still holds. */
  const holds = (e: UnitEntry): boolean => {
    const s = subjects.get(e.subject)
    for (const c of e.checks) {
      const map = s && mapOf(s, c.kind)
      const current = map?.has(c.name) ? JSON.stringify(map.get(c.name)) : null
      if (current !== c.expect) return false
    }
    for (const n of e.names ?? []) {
      const map = s ? mapOf(s, n.kind) : new Map<string, JsonValue>()
      const names = new Set(n.names)
      if (names.size !== map.size) return false
      for (const name of names) if (!map.has(name)) return false
    }
    return true
  }

  const outboxStore: OutboxStore = {
    async claim(owner, limit, lease) {
      check('claim')
      const now = clock.now()
      const out: OutboxMessage[] = []
      for (const [id, m] of outbox) {
        if (out.length >= limit) break
        if (m.until > now) continue
        m.owner = owner
        m.until = now + lease
        out.push({ id, body: m.body })
      }
      return out
    },
    async remove(ids) {
      check('remove')
      for (const id of ids) outbox.delete(id)
    },
    async size() {
      check('size')
      return outbox.size
    },
  }

  return {
    name: 'storage-memory',
    outbox: outboxStore,
    capabilities: { persistent: false, atomic: true, idempotent: true },
    async load(subject) {
      check('load', subject)
      return snapshot(subjects.get(subject))
    },
    async commit(subject, changes: readonly Change[], options?: CommitOptions) {
      check('commit', subject)
      const key = options?.idempotencyKey
      if (key !== undefined) {
        // A JSON array: no two (subject, key) pairs give the same text.
        const k = JSON.stringify(['c', subject, key])
        if (!seenKeys.add(k)) return { changes: [], duplicate: true } satisfies CommitResult
      }
      const stored = subjects.get(subject) ?? { props: new Map(), ext: new Map() }
      // Compute every new value first, so a throwing updater leaves the subject untouched.
      const results: CommittedChange[] = []
      for (const c of changes) {
        const map = mapOf(stored, c.kind)
        const oldValue = map.get(c.name)
        const newValue =
          c.op === 'set' ? c.value : c.op === 'update' ? c.update(cloneJson(oldValue)) : undefined
        results.push({ kind: c.kind, name: c.name, oldValue, newValue })
      }
      for (const r of results) {
        const map = mapOf(stored, r.kind)
        if (r.newValue === undefined) map.delete(r.name)
        else map.set(r.name, cloneJson(r.newValue))
      }
      if (stored.props.size === 0 && stored.ext.size === 0) subjects.delete(subject)
      else subjects.set(subject, stored)
      return {
        changes: results.map((r) => ({
          ...r,
          oldValue: cloneJson(r.oldValue),
          newValue: cloneJson(r.newValue),
        })),
      }
    },
    async commitUnit(unit: UnitCommit): Promise<UnitCommitResult> {
      check('commitUnit', unit.entries[0]?.subject)
      // Parse every value first: a unit whose text is not JSON fails before anything is written.
      const parsed = unit.entries.map((e) =>
        e.writes.map((w) => (w.value === null ? undefined : (JSON.parse(w.value) as JsonValue))),
      )
      const key = unit.key === undefined ? undefined : JSON.stringify(['u', unit.key])
      if (key !== undefined && seenKeys.has(key)) return { status: 'duplicate' }
      const failed = unit.entries.filter((e) => !holds(e))
      if (failed.length > 0) {
        const stale: Record<string, SubjectSnapshot> = Object.create(null)
        for (const e of failed) stale[e.subject] = snapshot(subjects.get(e.subject))
        return { status: 'conflict', stale: { ...stale } }
      }
      if (key !== undefined) seenKeys.add(key)
      unit.entries.forEach((e, i) => {
        const stored = subjects.get(e.subject) ?? { props: new Map(), ext: new Map() }
        e.writes.forEach((w, j) => {
          const value = parsed[i]![j]
          if (value === undefined) mapOf(stored, w.kind).delete(w.name)
          else mapOf(stored, w.kind).set(w.name, value)
        })
        if (stored.props.size === 0 && stored.ext.size === 0) subjects.delete(e.subject)
        else subjects.set(e.subject, stored)
      })
      const until = clock.now() + (unit.lease ?? 30_000)
      for (const m of unit.outbox ?? [])
        if (!outbox.has(m.id)) outbox.set(m.id, { body: m.body, owner: unit.owner ?? '', until })
      return { status: 'applied' }
    },
    async get(subject, kind, name) {
      check('get', subject)
      const s = subjects.get(subject)
      const map = s && mapOf(s, kind)
      return map?.has(name) ? { value: cloneJson(map.get(name)!) } : undefined
    },
    async flush(subject) {
      check('flush', subject)
      const s = subjects.get(subject)
      subjects.delete(subject)
      return snapshot(s)
    },
    async *subjects(pattern) {
      check('subjects')
      const match = pattern === undefined ? () => true : compileGlob(pattern)
      for (const name of [...subjects.keys()]) if (match(name)) yield name
    },
    async close() {
      closed = true
      subjects.clear()
      seenKeys.clear()
      outbox.clear()
    },
  }
}
