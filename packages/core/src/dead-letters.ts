/**
 * Dead-letter sinks: where an event goes when a handler's last attempt failed. In memory
 * (bounded, not durable), in a storage (durable: one ext property per entry of the subject
 * `substate:dead-letters`), and the encoding shared with other sinks (`@substate/pubsub`'s topic
 * sink). `redrive` hands dead letters back to `container.receive`.
 */
import type { JsonValue } from './json.js'
import { copyJson } from './json.js'
import type { Change, SubjectStorage } from './storage.js'
import type { DeadLetter, DeadLetterQuery, DeadLetterSink, StoredDeadLetter } from './types.js'

/** The subject a storage sink keeps its entries in, one ext property each. */
export const DEAD_LETTERS = 'substate:dead-letters'

const REDRIVE = /~redrive-\d+$/

/**
 * The id of a dead letter: its handler, and its event's `source` and `id` (without the suffix a
 * redrive adds). A redelivery or a redrive of the same event failing in the same handler
 * replaces the entry instead of adding one.
 */
export function deadLetterId(entry: DeadLetter): string {
  const { handler, event } = entry
  return [handler, event.source, event.id.replace(REDRIVE, '')].map(encodeURIComponent).join('|')
}

/** A dead letter as JSON (the error as name, message and cause; an event's `extra` is left out). */
export function encodeDeadLetter(entry: DeadLetter): JsonValue {
  const { event } = entry
  const e: Record<string, unknown> = {
    id: event.id,
    type: event.type,
    source: event.source,
    subject: event.subject,
    time: event.time,
    originId: event.originId,
  }
  if (event.payload !== undefined) e.payload = event.payload
  if (event.propertyName !== undefined) e.propertyName = event.propertyName
  if (event.oldValue !== undefined) e.oldValue = event.oldValue
  if (event.newValue !== undefined) e.newValue = event.newValue
  if (event.extensions !== undefined) e.extensions = event.extensions
  return copyJson(
    {
      v: 1,
      event: e,
      handler: entry.handler,
      error: describeError(entry.error),
      attempts: entry.attempts,
      at: entry.at,
    },
    `the dead letter of ${event.type} (${entry.handler})`,
  )
}

type ErrorJson = { name: string; message: string; code?: string; cause?: ErrorJson }

function describeError(e: unknown, depth = 0): ErrorJson {
  if (!(e instanceof Error)) return { name: 'Error', message: String(e) }
  const out: ErrorJson = { name: e.name, message: e.message }
  const code = (e as { code?: unknown }).code
  if (typeof code === 'string') out.code = code
  if (e.cause !== undefined && depth < 8) out.cause = describeError(e.cause, depth + 1)
  return out
}

function restoreError(json: ErrorJson): Error {
  const error = new Error(
    json.message,
    json.cause === undefined ? undefined : { cause: restoreError(json.cause) },
  )
  error.name = json.name
  if (json.code !== undefined) Object.assign(error, { code: json.code })
  return error
}

/**
 * Reads back what {@link encodeDeadLetter} wrote; the error is a plain `Error` with the original
 * name, message, code and causes. Throws a `TypeError` on anything else.
 */
export function decodeDeadLetter(json: unknown): StoredDeadLetter {
  const d = json as {
    v?: number
    event?: Record<string, unknown>
    handler?: string
    error?: ErrorJson
    attempts?: number
    at?: number
  }
  if (d?.v !== 1 || typeof d.event !== 'object' || typeof d.handler !== 'string' || !d.error)
    throw new TypeError('not a dead letter (encodeDeadLetter writes { v: 1, event, handler, ... })')
  const event = Object.freeze({ extra: undefined, payload: undefined, ...d.event }) as never
  const entry: DeadLetter = {
    event,
    handler: d.handler,
    error: restoreError(d.error),
    attempts: d.attempts ?? 1,
    at: d.at ?? 0,
  }
  return { ...entry, id: deadLetterId(entry) }
}

function matches(entry: StoredDeadLetter, query: DeadLetterQuery | undefined): boolean {
  if (query === undefined) return true
  return (
    (query.handler === undefined || entry.handler === query.handler) &&
    (query.type === undefined || entry.event.type === query.type) &&
    (query.subject === undefined || entry.event.subject === query.subject)
  )
}

/** Newest first, filtered, at most `query.limit`. */
function select(
  entries: Iterable<StoredDeadLetter>,
  query: DeadLetterQuery | undefined,
): StoredDeadLetter[] {
  // Reversed first: entries put in the same millisecond keep newest first (the sort is stable).
  const out = [...entries]
    .reverse()
    .filter((e) => matches(e, query))
    .sort((a, b) => b.at - a.at)
  return query?.limit === undefined ? out : out.slice(0, query.limit)
}

/** Options of {@link createMemoryDeadLetters}. */
export interface MemoryDeadLettersOptions {
  /**
   * How many entries to keep; the oldest go first.
   * @default 1000
   */
  readonly max?: number
}

/** A dead-letter sink that can be listed and emptied (every sink Substate provides is one). */
export interface ListableDeadLetterSink extends DeadLetterSink {
  list(query?: DeadLetterQuery): Promise<readonly StoredDeadLetter[]>
  remove(ids: readonly string[]): Promise<number>
}

/**
 * A dead-letter sink in memory: bounded, lost with the process, so not durable (an ingress does
 * not acknowledge an event that only reached it: the sender retries). For tests and development,
 * or to see what failed in the inspector.
 *
 * @example
 * const deadLetters = createMemoryDeadLetters({ max: 100 })
 * const container = createContainer({ deadLetter: deadLetters })
 */
export function createMemoryDeadLetters({
  max = 1000,
}: MemoryDeadLettersOptions = {}): ListableDeadLetterSink {
  if (!(max >= 1)) throw new TypeError('createMemoryDeadLetters(): max must be >= 1')
  const entries = new Map<string, StoredDeadLetter>()
  return {
    durable: false,
    async put(entry) {
      const id = deadLetterId(entry)
      entries.delete(id) // re-inserted last: the newest
      entries.set(id, { ...entry, id })
      while (entries.size > max) entries.delete(entries.keys().next().value!)
    },
    async list(query) {
      return select(entries.values(), query)
    },
    async remove(ids) {
      let n = 0
      for (const id of ids) if (entries.delete(id)) n++
      return n
    },
  }
}

/** Options of {@link storageDeadLetters}. */
export interface StorageDeadLettersOptions {
  /**
   * The subject holding the entries (one ext property each, so no event is emitted for them).
   * @default 'substate:dead-letters'
   */
  readonly subject?: string
}

/**
 * A durable dead-letter sink in a storage: each entry is an ext property of one subject, written
 * by a `commit` (so it works with every adapter; replicas sharing the storage share the entries).
 * `list` loads that subject: meant for the few entries a healthy service has, not millions.
 * The storage is not closed by the sink (close it, or the container using it, as usual).
 *
 * @example
 * const storage = createRedisStorage({ client })
 * const container = createContainer({ storage, deadLetter: storageDeadLetters(storage) })
 */
export function storageDeadLetters(
  storage: SubjectStorage,
  { subject = DEAD_LETTERS }: StorageDeadLettersOptions = {},
): ListableDeadLetterSink {
  if (typeof storage?.commit !== 'function')
    throw new TypeError('storageDeadLetters() takes a SubjectStorage')
  return {
    durable: true,
    async put(entry) {
      const change: Change = {
        op: 'set',
        kind: 'ext',
        name: deadLetterId(entry),
        value: encodeDeadLetter(entry),
      }
      await storage.commit(subject, [change], { oldValues: false })
    },
    async list(query) {
      const { ext } = await storage.load(subject)
      const out: StoredDeadLetter[] = []
      for (const value of Object.values(ext)) {
        try {
          out.push(decodeDeadLetter(value))
        } catch {
          // Something else written under this subject: not ours to list.
        }
      }
      return select(out, query)
    },
    async remove(ids) {
      if (ids.length === 0) return 0
      const { ext } = await storage.load(subject)
      const present = ids.filter((id) => Object.hasOwn(ext, id))
      if (present.length === 0) return 0
      const changes: Change[] = present.map((name) => ({ op: 'delete', kind: 'ext', name }))
      await storage.commit(subject, changes, { oldValues: false })
      return present.length
    },
  }
}

/** The event `redrive` hands to `container.receive` (an `IncomingEvent`). */
export interface RedrivenEvent {
  readonly id: string
  readonly source: string
  readonly type: string
  readonly subject: string
  readonly payload?: unknown
  readonly time?: number
  readonly originId?: string
  readonly propertyName?: string
  readonly extensions?: Readonly<Record<string, string | number | boolean>>
}

/** What `redrive` needs of a container. */
export interface RedriveTarget {
  receive(event: RedrivenEvent): Promise<{
    readonly status: 'handled' | 'duplicate' | 'failed'
    readonly error?: Error
  }>
}

/** What became of one redriven dead letter. */
export interface RedriveResult {
  readonly id: string
  readonly status: 'handled' | 'duplicate' | 'failed' | 'missing'
  readonly error?: Error
}

/**
 * The event a dead letter is redriven as: the original event (type, subject, payload, source,
 * origin), its id suffixed with the dead letter's time (`<id>~redrive-<at>`). A dead letter is
 * so redriven once: a second `redrive` of the same entry (another replica, a double click) is a
 * duplicate; if the redrive fails again, its new dead letter has a new time and can be redriven.
 */
export function redrivenEvent(entry: DeadLetter): RedrivenEvent {
  const { event } = entry
  return {
    id: `${event.id.replace(REDRIVE, '')}~redrive-${entry.at}`,
    source: event.source,
    type: event.type,
    subject: event.subject,
    payload: event.payload,
    time: event.time,
    originId: event.originId,
    ...(event.propertyName === undefined ? {} : { propertyName: event.propertyName }),
    ...(event.extensions === undefined ? {} : { extensions: event.extensions }),
  }
}

/**
 * Hands dead letters back to `container.receive`, one after another, and removes from `sink`
 * each that was handled (or was a duplicate: redriven already). `entries` are entries or ids
 * (looked up with `sink.list()`). The event runs as a received event does: every handler
 * matching its type runs again, not only the one that failed (handlers are idempotent, as for
 * any redelivery). A redrive that fails again is dead-lettered anew by its handler, under the
 * same id with a new time: that entry stays.
 *
 * @example
 * const failed = await deadLetters.list({ handler: 'billing' })
 * await redrive(container, deadLetters, failed)
 */
export async function redrive(
  container: RedriveTarget,
  sink: DeadLetterSink,
  entries: readonly (StoredDeadLetter | string)[],
): Promise<RedriveResult[]> {
  const results: RedriveResult[] = []
  for (const e of entries) {
    const id = typeof e === 'string' ? e : (e.id ?? deadLetterId(e))
    const entry = typeof e === 'string' ? await current(sink, id) : e
    if (entry === undefined) {
      results.push({ id, status: 'missing' })
      continue
    }
    const r = await container.receive(redrivenEvent(entry))
    // Removed only while it is still this entry: a new failure replaced it with a newer one.
    if (r.status !== 'failed' && (await current(sink, id))?.at === entry.at)
      await sink.remove?.([id])
    results.push({ id, status: r.status, ...(r.error === undefined ? {} : { error: r.error }) })
  }
  return results
}

async function current(sink: DeadLetterSink, id: string): Promise<StoredDeadLetter | undefined> {
  if (typeof sink.list !== 'function')
    throw new TypeError('redrive(): the dead-letter sink must have list() and remove()')
  return (await sink.list()).find((k) => k.id === id)
}
