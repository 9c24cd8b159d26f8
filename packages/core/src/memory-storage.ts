import { RecentKeys } from './_internal.js'
import { StorageError } from './errors.js'
import { cloneJson, type JsonValue } from './json.js'
import { compileGlob } from './router.js'
import type {
  Change,
  CommitOptions,
  CommitResult,
  CommittedChange,
  PropertyKind,
  SubjectSnapshot,
  SubjectStorage,
} from './storage.js'

/** Options of {@link createMemoryStorage}. */
export interface MemoryStorageOptions {
  /**
   * How many idempotency keys are remembered per storage (oldest forgotten first).
   * @default 100_000
   */
  readonly idempotencyWindow?: number
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
}: MemoryStorageOptions = {}): SubjectStorage {
  const subjects = new Map<string, Stored>()
  const seenKeys = new RecentKeys(idempotencyWindow)
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

  return {
    name: 'storage-memory',
    capabilities: { persistent: false, atomic: true, idempotent: true },
    async load(subject) {
      check('load', subject)
      return snapshot(subjects.get(subject))
    },
    async commit(subject, changes: readonly Change[], options?: CommitOptions) {
      check('commit', subject)
      const key = options?.idempotencyKey
      if (key !== undefined) {
        const k = `${subject}\u0000${key}`
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
    },
  }
}
