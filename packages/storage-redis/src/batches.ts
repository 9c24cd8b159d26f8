/*
 * Turning commits and units of work into the adapter's script calls, and their replies back into
 * outcomes; reading hashes into snapshots.
 */
import {
  StorageError,
  type SubjectSnapshot,
  type UnitCommit,
  type UnitCommitResult,
} from '@substate/core'
import {
  type BatchEntry,
  type EntryOutcome,
  type Raw,
  SnapshotBuilder,
} from '@substate/core/storage-kit'
import type { Redis } from 'ioredis'
import { field, NAME, wrap } from './connection.js'
import { commitScript, run, setsScript, unitsScript } from './scripts.js'

/**
 * A subject as stored, from its hash fields. Fields of other shapes are not ours (KRules only
 * writes p/e): left alone. A value that is not JSON is reported in `invalid`, not thrown.
 */
export function snapshot(fields: Iterable<[string, string]>): SubjectSnapshot {
  const b = new SnapshotBuilder('exact')
  for (const [f, raw] of fields) {
    const kind = f[0] === 'p' ? 'prop' : f[0] === 'e' ? 'ext' : undefined
    if (kind) b.add(kind, f.slice(1), raw)
  }
  return b.build()
}

/** Applies units with the units script, in one `EVALSHA` (see `scripts.ts` for the layout). */
export async function executeUnits(
  client: Redis,
  batch: readonly UnitCommit[],
  hashKey: (subject: string) => string,
  unitKey: (key: string) => string,
  outboxKeys: readonly string[],
  ttl: number,
): Promise<(UnitCommitResult | Error)[]> {
  const keys = [...outboxKeys]
  const args: (string | number)[] = [ttl, batch.length]
  for (const u of batch) {
    const idem = u.key === undefined ? 0 : keys.push(unitKey(u.key))
    const outbox = u.outbox?.length ?? 0
    args.push(idem, u.entries.length, outbox)
    if (outbox > 0) args.push(u.lease ?? 30_000, u.owner ?? '')
    for (const e of u.entries) {
      const { checks, writes, names } = e
      let cflags = ''
      for (const c of checks) cflags += c.expect === null ? 'a' : 'v'
      let sets = 0
      for (const w of writes) if (w.value !== null) sets++
      args.push(keys.push(hashKey(e.subject)), checks.length, cflags, names?.length ?? 0)
      args.push(sets, writes.length - sets)
      for (const c of checks) args.push(field(c.kind, c.name))
      for (const c of checks) if (c.expect !== null) args.push(c.expect)
      if (names !== undefined) {
        for (const n of names) {
          const fields = new Set<string>()
          for (const name of n.names) fields.add(field(n.kind, name))
          args.push(n.kind === 'prop' ? 'p' : 'e', fields.size)
          for (const f of fields) args.push(f)
        }
      }
      for (const w of writes) if (w.value !== null) args.push(field(w.kind, w.name), w.value)
      for (const w of writes) if (w.value === null) args.push(field(w.kind, w.name))
    }
    if (u.outbox !== undefined) for (const m of u.outbox) args.push(m.id, m.body)
  }
  const reply = (await run(client, unitsScript, keys, args)) as (number | (number | string[])[])[]
  return batch.map((u, i): UnitCommitResult | Error => {
    const r = reply[i]!
    if (r === 1) return APPLIED
    if (r === 2) return DUPLICATE
    if (typeof r === 'number' || r[0] !== 0)
      return new StorageError(
        NAME,
        'commitUnit',
        u.entries[0]?.subject,
        typeof r !== 'number' && r[0] === 3
          ? `${String(r[1])} is not a hash (WRONGTYPE): nothing of the unit was written`
          : `the units script answered ${JSON.stringify(r)}`,
      )
    const stale: Record<string, SubjectSnapshot> = {}
    for (let j = 1; j + 1 < r.length; j += 2) {
      const flat = r[j + 1] as string[]
      const pairs: [string, string][] = []
      for (let k = 0; k + 1 < flat.length; k += 2) pairs.push([flat[k]!, flat[k + 1]!])
      Object.defineProperty(stale, u.entries[r[j] as number]!.subject, {
        value: snapshot(pairs),
        enumerable: true,
      })
    }
    return { status: 'conflict', stale }
  })
}

const APPLIED: UnitCommitResult = Object.freeze({ status: 'applied' })
const DUPLICATE: UnitCommitResult = Object.freeze({ status: 'duplicate' })

/** An error Redis answered with for one key (named so `wrap` adds no "is Redis running" hint). */
class ReplyError extends Error {
  override name = 'ReplyError'
}

/**
 * Whether an entry is only blind sets: the sets script applies it with one `HSET` (atomic),
 * cheaper than the commit script, which reads, checks and reports.
 */
const plainSet = (e: BatchEntry): boolean =>
  !e.probe &&
  !e.oldValues &&
  e.idempotencyKey === undefined &&
  e.fields.length > 0 &&
  e.fields.every((f) => f.expect === undefined && f.write !== null)

export async function execute(
  client: Redis,
  batch: readonly BatchEntry[],
  hashKey: (subject: string) => string,
  idempotencyKey: (subject: string, key: string) => string,
  ttl: number,
): Promise<EntryOutcome[]> {
  const outcomes: EntryOutcome[] = new Array(batch.length)
  const plain: number[] = []
  const scripted: number[] = []
  for (let i = 0; i < batch.length; i++) (plainSet(batch[i]!) ? plain : scripted).push(i)
  const fail = (i: number, e: unknown): EntryOutcome => ({
    status: 'failed',
    error: wrap(e, client, NAME, 'commit', batch[i]!.subject),
  })
  // Both go out at once; an error of one part fails only its entries (the other may be written).
  const parts = await Promise.allSettled([
    plain.length === 0
      ? undefined
      : hsets(
          client,
          plain.map((i) => batch[i]!),
          hashKey,
        ),
    scripted.length === 0
      ? undefined
      : script(
          client,
          scripted.map((i) => batch[i]!),
          hashKey,
          idempotencyKey,
          ttl,
        ),
  ])
  const [hset, lua] = parts
  // Nothing was written: the batch failed as a whole.
  if (hset.status === 'rejected' && (scripted.length === 0 || lua.status === 'rejected'))
    throw hset.reason
  if (lua.status === 'rejected' && plain.length === 0) throw lua.reason
  plain.forEach((i, j) => {
    const error = hset.status === 'rejected' ? hset.reason : hset.value![j]
    outcomes[i] = error
      ? fail(i, typeof error === 'string' ? new ReplyError(error) : error)
      : { status: 'applied', old: batch[i]!.fields.map(() => null) }
  })
  scripted.forEach((i, j) => {
    outcomes[i] = lua.status === 'rejected' ? fail(i, lua.reason) : lua.value![j]!
  })
  return outcomes
}

/**
 * Writes blind-set entries with the sets script, in one `EVALSHA`; per entry, `null` or the error
 * Redis raised for it.
 */
async function hsets(
  client: Redis,
  entries: readonly BatchEntry[],
  hashKey: (subject: string) => string,
): Promise<(string | null)[]> {
  const keys: string[] = []
  const args: (string | number)[] = []
  for (const e of entries) {
    keys.push(hashKey(e.subject))
    args.push(e.fields.length)
    for (const f of e.fields) args.push(field(f.kind, f.name), f.write!)
  }
  const reply = (await run(client, setsScript, keys, args)) as (number | string)[]
  return reply.map((r) => (r === 1 ? null : String(r)))
}

/** Applies entries with the commit script, in one `EVALSHA`. */
async function script(
  client: Redis,
  batch: readonly BatchEntry[],
  hashKey: (subject: string) => string,
  idempotencyKey: (subject: string, key: string) => string,
  ttl: number,
): Promise<EntryOutcome[]> {
  const keys = batch.map((e) => hashKey(e.subject))
  const args: (string | number)[] = [ttl, batch.length]
  for (const e of batch) {
    const idem =
      e.idempotencyKey === undefined ? 0 : keys.push(idempotencyKey(e.subject, e.idempotencyKey))
    let flags = ''
    const values: string[] = []
    const expected: string[] = []
    args.push(e.fields.length, idem, '')
    const flagsAt = args.length - 1
    for (const f of e.fields) {
      args.push(field(f.kind, f.name))
      if (e.probe) flags += 'r'
      else {
        if (f.write !== null) values.push(f.write)
        if (f.expect === undefined)
          // Written blind (not read) when the caller does not need the old value.
          flags += e.oldValues ? (f.write === null ? 'd' : 's') : f.write === null ? 'x' : 'w'
        else if (f.expect === null) flags += f.write === null ? 'E' : 'A'
        else {
          flags += f.write === null ? 'D' : 'S'
          expected.push(f.expect)
        }
      }
    }
    args[flagsAt] = flags
    for (const v of values) args.push(v)
    for (const v of expected) args.push(v)
  }
  const reply = (await run(client, commitScript, keys, args)) as (number | Raw)[]
  let at = 0
  return batch.map((e): EntryOutcome => {
    const status = reply[at] as number
    const values = reply.slice(at + 1, at + 1 + e.fields.length) as Raw[]
    at += 1 + e.fields.length
    if (status === 1) return { status: 'applied', old: values }
    if (status === 2) return { status: 'duplicate' }
    return { status: 'conflict', current: values }
  })
}
