import type { JsonValue } from '../json.js'
import type {
  Change,
  PropertyKind,
  SubjectSnapshot,
  SubjectStorage,
  UnitEntry,
} from '../storage.js'
import type { StorageFactory } from './storage-factory.js'

type Vitest = typeof import('vitest')

// The one import of vitest in `@substate/core/testing`. vitest is loaded only under vitest (which
// sets VITEST): the rest of the kit (the fake clock, the recorders) works in any test runner, with
// no vitest installed.
const loaded = process.env.VITEST === undefined ? undefined : await import('vitest')
const outsideVitest = (): never => {
  throw new TypeError('describeStorage() defines vitest suites: run the file with vitest')
}
const vitest: Vitest =
  loaded ??
  ({
    afterAll: outsideVitest,
    describe: outsideVitest,
    expect: outsideVitest,
    it: outsideVitest,
  } as unknown as Vitest)

/** vitest's `afterAll` (outside vitest: throws a TypeError saying to run the file with vitest). */
export const afterAll: Vitest['afterAll'] = vitest.afterAll
/** vitest's `describe` (outside vitest: throws a TypeError saying to run the file with vitest). */
export const describe: Vitest['describe'] = vitest.describe
/** vitest's `expect` (outside vitest: throws a TypeError saying to run the file with vitest). */
export const expect: Vitest['expect'] = vitest.expect
/** vitest's `it` (outside vitest: throws a TypeError saying to run the file with vitest). */
export const it: Vitest['it'] = vitest.it

/** What each group of the conformance suite is handed. */
export interface StorageSuite {
  readonly factory: StorageFactory
  /** A storage of `ns` made by `factory.create`, closed after the suite. */
  make(ns: string): Promise<SubjectStorage>
  /**
   * A storage of `ns` on a connection of its own when the factory can make one (else `make`),
   * closed after the suite.
   */
  independent(ns: string): Promise<SubjectStorage>
}

let seq = 0
/** A name no other test (nor another run on the same server) uses: a namespace, a subject. */
export const fresh = (): string =>
  `t${Date.now().toString(36)}${(seq++).toString(36)}${Math.random().toString(36).slice(2, 6)}`

/** A change that sets `name` to `value`. */
export const set = (name: string, value: JsonValue, kind: 'prop' | 'ext' = 'prop'): Change => ({
  op: 'set',
  kind,
  name,
  value,
})
/** A change that adds one to the number `name` (absent counts as 0). */
export const inc = (name: string): Change => ({
  op: 'update',
  kind: 'prop',
  name,
  update: (n) => (typeof n === 'number' ? n : 0) + 1,
})
/** A change that deletes `name`. */
export const del = (name: string, kind: 'prop' | 'ext' = 'prop'): Change => ({
  op: 'delete',
  kind,
  name,
})

/** What a unit sends as the expected text of a property it read in `snap`. */
export const seen = (
  snap: SubjectSnapshot,
  name: string,
  kind: PropertyKind = 'prop',
): string | null => {
  const raw = snap.raw?.[kind]?.[name]
  if (raw !== undefined) return raw
  const map = kind === 'prop' ? snap.props : snap.ext
  return Object.hasOwn(map, name) ? JSON.stringify(map[name]) : null
}

/** A unit entry that read `reads` (name -> expected text) and writes `writes` (null deletes). */
export const entry = (
  subject: string,
  reads: Record<string, string | null>,
  writes: Record<string, unknown>,
): UnitEntry => ({
  subject,
  checks: Object.entries(reads).map(([name, expect]) => ({ kind: 'prop', name, expect })),
  writes: Object.entries(writes).map(([name, v]) => ({
    kind: 'prop',
    name,
    value: v === null ? null : JSON.stringify(v),
  })),
})
