/*
 * Turning commits and units of work into the adapter's statements, and their result rows back
 * into outcomes; reading rows into snapshots.
 */
import {
  type JsonValue,
  StorageError,
  type SubjectSnapshot,
  type UnitCommit,
  type UnitCommitResult,
} from '@substate/core'
import {
  type BatchEntry,
  type EntryOutcome,
  losesPrecision,
  objectMembers,
  parseRaw,
  type Raw,
  SnapshotBuilder,
} from '@substate/core/storage-kit'
import { NAME, type PgQueryConfig } from './connection.js'
import type { Statements } from './sql.js'

/** A stored value as a JSON object member, for building a parameter without re-encoding. */
const member = (name: string, raw: string): string => `${JSON.stringify(name)}:${raw}`
/** Whether JSON text holds the escaped NUL character, which jsonb cannot store. */
const NUL = /(?:^|[^\\])(?:\\\\)*\\u0000/

/** One entry's writes and checks, per column (`p` properties, `e` ext_properties). */
interface Column {
  /** `"name":json` members of the object of values to set. */
  readonly set: string[]
  readonly del: string[]
  /** `"name":json` members of the object of expected values. */
  readonly expect: string[]
  readonly absent: string[]
  /** Names whose old values to return. */
  readonly keep: string[]
}

const column = (): Column => ({ set: [], del: [], expect: [], absent: [], keep: [] })

function columns(e: BatchEntry): { p: Column; e: Column } {
  const col = { p: column(), e: column() }
  for (const f of e.fields) {
    const c = f.kind === 'prop' ? col.p : col.e
    c.keep.push(f.name)
    if (e.probe) continue
    if (f.write === null) c.del.push(f.name)
    else c.set.push(member(f.name, f.write))
    if (f.expect === null) c.absent.push(f.name)
    else if (f.expect !== undefined) c.expect.push(member(f.name, f.expect))
  }
  return col
}

/**
 * The old values of an entry's fields, from the `op`/`oe` columns of a result row: JSON arrays of
 * the JSON texts of its `prop` and `ext` fields, in order (null when the row did not exist).
 */
function olds(e: BatchEntry, row: Record<string, unknown>): Raw[] {
  const op = row.op == null ? [] : (JSON.parse(row.op as string) as Raw[])
  const oe = row.oe == null ? [] : (JSON.parse(row.oe as string) as Raw[])
  let p = 0
  let x = 0
  return e.fields.map((f) => (f.kind === 'prop' ? op[p++] : oe[x++]) ?? null)
}

/**
 * Whether an entry can be written blind: its old values are not needed, it has no checks, and it
 * sets something (a change set that only deletes may empty the row, which must then be deleted:
 * that needs the row read).
 */
const isBlind = (e: BatchEntry, col: { p: Column; e: Column }): boolean =>
  !e.oldValues &&
  !e.probe &&
  e.fields.every((f) => f.expect === undefined) &&
  (col.p.set.length > 0 || col.e.set.length > 0)

/**
 * Applies a batch: a batch of blind entries (see `isBlind`) by one upsert; a lone commit to an existing row by the lighter statement of the fast path,
 * and otherwise (or when the row is missing) with the batch statement.
 */
export async function execute(
  batch: readonly BatchEntry[],
  sql: Statements,
  name: (what: string) => string,
  query: (config: PgQueryConfig) => Promise<Record<string, unknown>[]>,
): Promise<EntryOutcome[]> {
  const outcomes: (EntryOutcome | undefined)[] = new Array(batch.length)
  const valid: Array<{ i: number; e: BatchEntry; col: { p: Column; e: Column } }> = []
  for (const [i, e] of batch.entries()) {
    const invalid = nulIn(e)
    if (invalid)
      outcomes[i] = {
        status: 'failed',
        error: new StorageError(
          NAME,
          'commit',
          e.subject,
          `${invalid} holds the NUL character (\\u0000), which PostgreSQL jsonb cannot store`,
        ),
      }
    else valid.push({ i, e, col: columns(e) })
  }
  if (valid.length > 0 && valid.every(({ e, col }) => isBlind(e, col))) {
    // Only sets and deletes whose old values are not needed: one upsert, no read of the rows.
    const entries = valid.map(
      ({ i, e, col: { p, e: x } }) =>
        `{"i":${i},"s":${JSON.stringify(e.subject)},` +
        `"key":${e.idempotencyKey === undefined ? 'null' : JSON.stringify(e.idempotencyKey)},` +
        `"sp":{${p.set}},"se":{${x.set}}}`,
    )
    const deleted = (pick: (col: { p: Column; e: Column }) => string[]): string =>
      `{${valid
        .filter(({ col }) => pick(col).length > 0)
        .map(({ e, col }) => `${JSON.stringify(e.subject)}:${JSON.stringify(pick(col))}`)}}`
    const keyed = valid.some(({ e }) => e.idempotencyKey !== undefined)
    const rows = await query({
      name: name(keyed ? 'blind' : 'blind_plain'),
      text: keyed ? sql.blind : sql.blindPlain,
      values: [
        `[${entries}]`,
        keyed ? valid.map((v) => v.e.subject) : [],
        deleted((c) => c.p.del),
        deleted((c) => c.e.del),
      ],
    })
    if (!keyed) {
      const written = new Set(rows.map((r) => r.s as string))
      for (const { i, e } of valid)
        outcomes[i] = written.has(e.subject)
          ? { status: 'applied', old: batch[i]!.fields.map(() => null) }
          : { status: 'failed', error: notObject(e.subject) }
    } else
      for (const row of rows) {
        const i = Number(row.i)
        const status = Number(row.status)
        outcomes[i] =
          status === 2
            ? { status: 'duplicate' }
            : status === 5
              ? { status: 'failed', error: notObject(batch[i]!.subject) }
              : { status: 'applied', old: batch[i]!.fields.map(() => null) }
      }
    return outcomes.map((o) => o ?? { status: 'failed', error: new Error('no result row') })
  }
  const lone = valid.length === 1 ? valid[0]! : undefined
  if (
    lone &&
    !lone.e.probe &&
    lone.e.idempotencyKey === undefined &&
    // A change set that only deletes may empty the row, which the batch statement removes.
    (lone.col.p.set.length > 0 || lone.col.e.set.length > 0)
  ) {
    const { p, e } = lone.col
    // Properties only, no deletes, no absent checks: the leaner statements.
    const props = p.del.length === 0 && p.absent.length === 0 && e.keep.length === 0
    const one = props && lone.e.fields.length === 1 ? lone.e.fields[0]! : undefined
    const rows = await query(
      one
        ? {
            name: name('update_1'),
            text: sql.updateProp,
            values: [lone.e.subject, one.name, one.write, one.expect ?? null],
          }
        : props
          ? {
              name: name('update_p'),
              text: sql.updateProps,
              values: [lone.e.subject, `{${p.set}}`, `{${p.expect}}`, p.keep],
            }
          : {
              name: name('update'),
              text: sql.update,
              values: [
                lone.e.subject,
                p.del,
                `{${p.set}}`,
                `{${p.expect}}`,
                p.absent,
                p.keep,
                e.del,
                `{${e.set}}`,
                `{${e.expect}}`,
                e.absent,
                e.keep,
              ],
            },
    )
    const row = rows[0]
    const bad = row && badColumn(lone.e.subject, row)
    if (bad) {
      outcomes[lone.i] = { status: 'failed', error: bad }
      return outcomes as EntryOutcome[]
    }
    if (row) {
      const values = one ? [(row.v as Raw | undefined) ?? null] : olds(lone.e, row)
      outcomes[lone.i] =
        row.done === true || row.done === 't'
          ? { status: 'applied', old: values }
          : { status: 'conflict', current: values }
      return outcomes as EntryOutcome[]
    }
  }
  if (valid.length > 0) {
    const entries = valid.map(
      ({ i, e, col: { p, e: x } }) =>
        `{"i":${i},"s":${JSON.stringify(e.subject)},"probe":${e.probe},` +
        `"key":${e.idempotencyKey === undefined ? 'null' : JSON.stringify(e.idempotencyKey)},` +
        `"sp":{${p.set}},"dp":${JSON.stringify(p.del)},"se":{${x.set}},"de":${JSON.stringify(x.del)},` +
        `"ep":{${p.expect}},"ap":${JSON.stringify(p.absent)},` +
        `"ee":{${x.expect}},"ae":${JSON.stringify(x.absent)},` +
        `"kp":${JSON.stringify(p.keep)},"ke":${JSON.stringify(x.keep)}}`,
    )
    const rows = await query({
      name: name('commit'),
      text: sql.commit,
      values: [`[${entries}]`, valid.map((v) => v.e.subject)],
    })
    for (const row of rows) {
      const i = Number(row.i)
      const bad = badColumn(batch[i]!.subject, row)
      if (bad) {
        outcomes[i] = { status: 'failed', error: bad }
        continue
      }
      const values = olds(batch[i]!, row)
      const status = Number(row.status)
      outcomes[i] =
        status === 1
          ? { status: 'applied', old: values }
          : status === 2
            ? { status: 'duplicate' }
            : { status: 'conflict', current: status === 3 ? undefined : values }
    }
  }
  return outcomes.map((o) => o ?? { status: 'failed', error: new Error('no result row') })
}

/** A StorageError for a row whose `tp`/`te` (jsonb types of its columns) are not objects. */
function badColumn(subject: string, row: Record<string, unknown>): StorageError | undefined {
  for (const [col, type] of [
    ['properties', row.tp],
    ['ext_properties', row.te],
  ] as const)
    if (type != null && type !== 'object')
      return new StorageError(
        NAME,
        'commit',
        subject,
        `the ${col} column holds a JSON ${String(type)}, not an object (written by another tool?): nothing was written`,
      )
  return undefined
}

const notObject = (subject: string): StorageError =>
  new StorageError(
    NAME,
    'commit',
    subject,
    'the properties or ext_properties column holds JSON that is not an object (written by another tool?): nothing was written',
  )

/** What in an entry PostgreSQL cannot store (NUL in text or jsonb), if anything. */
function nulIn(e: BatchEntry): string | undefined {
  if (e.subject.includes('\u0000')) return 'the subject name'
  if (e.idempotencyKey?.includes('\u0000')) return 'the idempotency key'
  for (const f of e.fields) {
    if (f.name.includes('\u0000')) return `the name of ${JSON.stringify(f.name)}`
    if (f.write?.includes('\\u0000') && NUL.test(f.write)) return `the value of ${f.name}`
  }
  return undefined
}

/**
 * A row as a snapshot, from its two jsonb columns as text. NULL (from another tool) reads as
 * empty; a column that is not an object is a StorageError naming it. jsonb compares values, not
 * texts, so only a value whose numbers a double cannot hold (integers above 2^53) gets its stored
 * text in `raw`.
 */
export function rowSnapshot(subject: string, p: string | null, e: string | null): SubjectSnapshot {
  const props = storedObject(subject, 'properties', p)
  const ext = storedObject(subject, 'ext_properties', e)
  if (!(p !== null && losesPrecision(p)) && !(e !== null && losesPrecision(e)))
    return { props, ext }
  const b = new SnapshotBuilder('semantic')
  if (p !== null) for (const [k, v] of objectMembers(p)) b.add('prop', k, v)
  if (e !== null) for (const [k, v] of objectMembers(e)) b.add('ext', k, v)
  return b.build()
}

export function storedObject(
  subject: string,
  name: string,
  text: string | null,
): Record<string, JsonValue> {
  if (text === null) return {}
  if (text[0] !== '{')
    throw new StorageError(
      NAME,
      'read',
      subject,
      `the ${name} column holds ${text.length > 40 ? `${text.slice(0, 40)}…` : text}, not a JSON object (written by another tool?)`,
    )
  return parseRaw(text, NAME, subject, name) as Record<string, JsonValue>
}

/** What in a unit PostgreSQL cannot store (NUL in text or jsonb), if anything. */
export function nulInUnit(u: UnitCommit): string | undefined {
  if (u.key?.includes('\u0000')) return 'the unit key'
  for (const m of u.outbox ?? [])
    if (m.id.includes('\u0000') || m.body.includes('\u0000')) return `outbox message ${m.id}`
  for (const e of u.entries) {
    if (e.subject.includes('\u0000')) return 'a subject name'
    for (const w of e.writes) {
      if (w.name.includes('\u0000')) return `the name of ${JSON.stringify(w.name)}`
      if (w.value?.includes('\\u0000') && NUL.test(w.value)) return `the value of ${w.name}`
    }
    for (const c of e.checks) if (c.name.includes('\u0000')) return `a checked name`
  }
  return undefined
}

/** Applies units with the units function, in one statement. */
export async function executeUnits(
  batch: readonly UnitCommit[],
  sql: Statements,
  name: (what: string) => string,
  query: (config: PgQueryConfig) => Promise<Record<string, unknown>[]>,
): Promise<(UnitCommitResult | Error)[]> {
  const units = batch.map((u) => {
    const entries = u.entries.map((e) => {
      const col = {
        prop: {
          c: [] as string[],
          a: [] as string[],
          n: 'null',
          s: [] as string[],
          d: [] as string[],
        },
        ext: {
          c: [] as string[],
          a: [] as string[],
          n: 'null',
          s: [] as string[],
          d: [] as string[],
        },
      }
      for (const c of e.checks) {
        if (c.expect === null) col[c.kind].a.push(c.name)
        else col[c.kind].c.push(member(c.name, c.expect))
      }
      for (const n of e.names ?? []) col[n.kind].n = JSON.stringify([...new Set(n.names)])
      for (const w of e.writes) {
        if (w.value === null) col[w.kind].d.push(w.name)
        else col[w.kind].s.push(member(w.name, w.value))
      }
      const { prop: p, ext: x } = col
      return (
        `{"s":${JSON.stringify(e.subject)},"cp":{${p.c}},"ap":${JSON.stringify(p.a)},"np":${p.n},` +
        `"sp":{${p.s}},"dp":${JSON.stringify(p.d)},"ce":{${x.c}},"ae":${JSON.stringify(x.a)},` +
        `"ne":${x.n},"se":{${x.s}},"de":${JSON.stringify(x.d)}}`
      )
    })
    return (
      `{"key":${u.key === undefined ? 'null' : JSON.stringify(u.key)},` +
      `"owner":${JSON.stringify(u.owner ?? '')},"lease":${Math.max(0, Math.round(u.lease ?? 30_000))},` +
      `"o":${JSON.stringify(u.outbox ?? [])},"e":[${entries}]}`
    )
  })
  const rows = await query({ name: name('units'), text: sql.units, values: [`[${units}]`] })
  const results = JSON.parse(rows[0]!.r as string) as Array<{
    st: number
    stale?: Record<string, [string, string]>
    s?: string
    col?: string
    type?: string
  }>
  return results.map((r): UnitCommitResult | Error => {
    if (r.st === 1) return { status: 'applied' }
    if (r.st === 2) return { status: 'duplicate' }
    if (r.st === 4)
      return new StorageError(
        NAME,
        'commitUnit',
        r.s,
        `the ${r.col} column holds a JSON ${r.type}, not an object (written by another tool?): nothing was written`,
      )
    const stale: Record<string, SubjectSnapshot> = {}
    try {
      for (const [subject, [p, e]] of Object.entries(r.stale ?? {}))
        Object.defineProperty(stale, subject, {
          value: rowSnapshot(subject, p, e),
          enumerable: true,
        })
    } catch (e) {
      return e as Error
    }
    return { status: 'conflict', stale }
  })
}
