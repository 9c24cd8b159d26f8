import { describe, expect, it } from 'vitest'
import { isSubstateError } from '../errors.js'
import type { JsonValue } from '../json.js'
import type { Change, SubjectStorage } from '../storage.js'

/** How {@link describeStorage} makes the storages it tests. */
export interface StorageFactory {
  /**
   * A new storage. Storages created with the same `namespace` share data (and should share one
   * client or pool when `shared` is true, to prove atomicity across writers on one connection);
   * different namespaces must be isolated (a Redis prefix, a PostgreSQL table). Each test uses a
   * fresh namespace.
   */
  create(namespace: string): SubjectStorage | Promise<SubjectStorage>
  /**
   * A storage of `namespace` on a connection of its own (a new client or pool), as another
   * process would have: then writers race on the server, not in one client's queue. Omit for a
   * storage that lives in one process (the tests that need it are skipped).
   */
  createIndependent?(namespace: string): SubjectStorage | Promise<SubjectStorage>
  /** A storage whose server is down (e.g. a closed port). Omit when there is no server. */
  createUnreachable?(): SubjectStorage | Promise<SubjectStorage>
  /** Called once after the suite: close clients the factory created. */
  cleanup?(): Promise<void>
}

let seq = 0
const fresh = (): string =>
  `t${Date.now().toString(36)}${(seq++).toString(36)}${Math.random().toString(36).slice(2, 6)}`

const set = (name: string, value: JsonValue, kind: 'prop' | 'ext' = 'prop'): Change => ({
  op: 'set',
  kind,
  name,
  value,
})
const inc = (name: string): Change => ({
  op: 'update',
  kind: 'prop',
  name,
  update: (n) => (typeof n === 'number' ? n : 0) + 1,
})
const del = (name: string, kind: 'prop' | 'ext' = 'prop'): Change => ({ op: 'delete', kind, name })

/**
 * The storage conformance suite: every adapter runs it against its real backend.
 *
 * @example
 * describeStorage('redis', { create: (ns) => createRedisStorage({ client, prefix: `${ns}:` }) })
 */
export function describeStorage(name: string, factory: StorageFactory): void {
  describe(`storage conformance: ${name}`, () => {
    const open: SubjectStorage[] = []
    const make = async (ns: string): Promise<SubjectStorage> => {
      const s = await factory.create(ns)
      open.push(s)
      return s
    }

    it('loads an unknown subject as empty', async () => {
      const s = await make(fresh())
      expect(await s.load('nobody')).toEqual({ props: {}, ext: {} })
      expect(await s.get('nobody', 'prop', 'x')).toBeUndefined()
    })

    it('round-trips every JSON type, in props and ext', async () => {
      const s = await make(fresh())
      const values: Record<string, JsonValue> = {
        str: 'héllo "quoted" \n ✓',
        empty: '',
        int: 42,
        neg: -7,
        float: 3.25,
        zero: 0,
        big: 2 ** 53 - 1,
        t: true,
        f: false,
        nil: null,
        arr: [1, 'two', null, [3], { four: 4 }],
        emptyArr: [],
        obj: { a: { b: { c: [true, false] } }, 'key with space': 1 },
        emptyObj: {},
      }
      const changes = Object.entries(values).map(([k, v]) => set(k, v))
      changes.push(set('tags', ['a', 'b'], 'ext'), set('owner', { id: 1 }, 'ext'))
      await s.commit('rt:1', changes)
      const loaded = await s.load('rt:1')
      expect(loaded.props).toEqual(values)
      expect(loaded.ext).toEqual({ tags: ['a', 'b'], owner: { id: 1 } })
      for (const [k, v] of Object.entries(values)) {
        expect(await s.get('rt:1', 'prop', k)).toEqual({ value: v })
      }
      expect(await s.get('rt:1', 'ext', 'tags')).toEqual({ value: ['a', 'b'] })
      // props and ext are separate maps: same name, different values
      await s.commit('rt:1', [set('same', 1), set('same', 2, 'ext')])
      expect(await s.get('rt:1', 'prop', 'same')).toEqual({ value: 1 })
      expect(await s.get('rt:1', 'ext', 'same')).toEqual({ value: 2 })
    })

    it('returns the exact old and new value of every change', async () => {
      const s = await make(fresh())
      const first = await s.commit('ov:1', [set('a', 1), inc('n')])
      expect(first.changes).toEqual([
        { kind: 'prop', name: 'a', oldValue: undefined, newValue: 1 },
        { kind: 'prop', name: 'n', oldValue: undefined, newValue: 1 },
      ])
      const second = await s.commit('ov:1', [set('a', { x: 1 }), inc('n'), del('missing')])
      expect(second.changes).toEqual([
        { kind: 'prop', name: 'a', oldValue: 1, newValue: { x: 1 } },
        { kind: 'prop', name: 'n', oldValue: 1, newValue: 2 },
        { kind: 'prop', name: 'missing', oldValue: undefined, newValue: undefined },
      ])
    })

    it('deletes properties and flushes subjects', async () => {
      const s = await make(fresh())
      await s.commit('df:1', [set('a', 1), set('b', 2), set('e', 'x', 'ext')])
      const r = await s.commit('df:1', [del('a')])
      expect(r.changes[0]).toMatchObject({ name: 'a', oldValue: 1, newValue: undefined })
      expect(await s.load('df:1')).toEqual({ props: { b: 2 }, ext: { e: 'x' } })
      expect(await s.flush('df:1')).toEqual({ props: { b: 2 }, ext: { e: 'x' } })
      expect(await s.load('df:1')).toEqual({ props: {}, ext: {} })
      expect(await s.flush('df:1')).toEqual({ props: {}, ext: {} })
    })

    it('commits a change set all or nothing: a throwing updater writes nothing', async () => {
      const s = await make(fresh())
      await s.commit('at:1', [set('keep', 'old')])
      const boom: Change = {
        op: 'update',
        kind: 'prop',
        name: 'bad',
        update: () => {
          throw new Error('updater failed')
        },
      }
      await expect(s.commit('at:1', [set('keep', 'new'), set('other', 1), boom])).rejects.toThrow()
      expect(await s.load('at:1')).toEqual({ props: { keep: 'old' }, ext: {} })
    })

    it('keeps the set after a delete-then-set in one change set and across commits', async () => {
      const s = await make(fresh())
      await s.commit('ds:1', [set('p', 1)])
      await s.commit('ds:1', [del('p')])
      await s.commit('ds:1', [set('p', 2)])
      expect(await s.get('ds:1', 'prop', 'p')).toEqual({ value: 2 })
      await s.commit('ds:1', [del('q'), set('p', 3)])
      expect(await s.load('ds:1')).toEqual({ props: { p: 3 }, ext: {} })
    })

    it('applies 200 concurrent updaters from 8 storages on one namespace without losing one', async () => {
      const ns = fresh()
      const storages = await Promise.all(Array.from({ length: 8 }, () => make(ns)))
      const subject = `brand-new:${fresh()}`
      await Promise.all(
        storages.flatMap((s) => Array.from({ length: 25 }, () => s.commit(subject, [inc('n')]))),
      )
      expect(await storages[0]!.get(subject, 'prop', 'n')).toEqual({ value: 200 })
    })

    it('never loses an update under heavy contention: success or ConflictError, nothing between', async () => {
      const ns = fresh()
      const storages = await Promise.all(Array.from({ length: 4 }, () => make(ns)))
      const outcomes = await Promise.allSettled(
        storages.flatMap((s) =>
          Array.from({ length: 50 }, () => s.commit('hot:1', [inc('n'), inc('m')])),
        ),
      )
      const ok = outcomes.filter((o) => o.status === 'fulfilled').length
      for (const o of outcomes) {
        if (o.status === 'rejected') expect(isSubstateError(o.reason, 'CONFLICT')).toBe(true)
      }
      expect(ok).toBeGreaterThan(0)
      expect(await storages[0]!.load('hot:1')).toEqual({ props: { n: ok, m: ok }, ext: {} })
    })

    // Only where there is a server to race on (a one-process storage has no second connection).
    if (factory.createIndependent) {
      it('applies concurrent updaters from separate connections (processes) without losing one', async () => {
        const ns = fresh()
        const storages = await Promise.all(
          Array.from({ length: 4 }, async () => {
            const s = await factory.createIndependent!(ns)
            open.push(s)
            return s
          }),
        )
        // A subject nobody has written yet: creating it must not race either.
        const subject = `brand-new:${fresh()}`
        const outcomes = await Promise.allSettled(
          storages.flatMap((s) =>
            Array.from({ length: 25 }, () => s.commit(subject, [inc('n'), set('last', 1)])),
          ),
        )
        const ok = outcomes.filter((o) => o.status === 'fulfilled').length
        for (const o of outcomes) {
          if (o.status === 'rejected') expect(isSubstateError(o.reason, 'CONFLICT')).toBe(true)
        }
        expect(ok).toBeGreaterThan(0)
        expect(await storages[0]!.get(subject, 'prop', 'n')).toEqual({ value: ok })
        // Every applied commit saw its own old value: no two read the same one.
        const olds = outcomes.flatMap((o) =>
          o.status === 'fulfilled'
            ? [(o.value.changes[0]!.oldValue as number | undefined) ?? 0]
            : [],
        )
        expect(new Set(olds).size).toBe(ok)
      })
    }

    it('makes a commit with an idempotency key apply once', async () => {
      const s = await make(fresh())
      if (!s.capabilities.idempotent) return
      const a = await s.commit('id:1', [inc('n')], { idempotencyKey: 'evt-1' })
      const b = await s.commit('id:1', [inc('n')], { idempotencyKey: 'evt-1' })
      const c = await s.commit('id:2', [inc('n')], { idempotencyKey: 'evt-1' })
      expect(a.duplicate ?? false).toBe(false)
      expect(b).toEqual({ changes: [], duplicate: true })
      expect(c.duplicate ?? false).toBe(false)
      expect(await s.get('id:1', 'prop', 'n')).toEqual({ value: 1 })
    })

    it('lists subjects by glob and isolates namespaces', async () => {
      const ns = fresh()
      const s = await make(ns)
      const other = await make(fresh())
      await s.commit('device:1', [set('a', 1)])
      await s.commit('device:2', [set('a', 1, 'ext')])
      await s.commit('user:1', [set('a', 1)])
      await other.commit('device:3', [set('a', 1)])
      const list = async (st: SubjectStorage, p?: string) => {
        const out: string[] = []
        for await (const n of st.subjects(p)) out.push(n)
        return out.sort()
      }
      expect(await list(s)).toEqual(['device:1', 'device:2', 'user:1'])
      expect(await list(s, 'device:*')).toEqual(['device:1', 'device:2'])
      expect(await list(other)).toEqual(['device:3'])
      expect(await other.load('device:1')).toEqual({ props: {}, ext: {} })
    })

    it('copies values in and out', async () => {
      const s = await make(fresh())
      const value = { nested: { n: 1 } }
      await s.commit('cp:1', [set('v', value)])
      value.nested.n = 99
      const got = await s.get('cp:1', 'prop', 'v')
      expect(got).toEqual({ value: { nested: { n: 1 } } })
      ;(got!.value as { nested: { n: number } }).nested.n = 5
      expect(await s.get('cp:1', 'prop', 'v')).toEqual({ value: { nested: { n: 1 } } })
    })

    if (factory.createUnreachable) {
      it('rejects with a StorageError, within 10 s, when the server is down', async () => {
        const s = await factory.createUnreachable!()
        const started = Date.now()
        const ops: Array<[string, () => Promise<unknown>]> = [
          ['load', () => s.load('down:1')],
          ['commit', () => s.commit('down:1', [set('a', 1)])],
          ['update', () => s.commit('down:1', [inc('n')])],
          ['get', () => s.get('down:1', 'prop', 'a')],
          ['flush', () => s.flush('down:1')],
          [
            'subjects',
            async () => {
              for await (const _ of s.subjects()) break
            },
          ],
        ]
        for (const [op, run] of ops) {
          const err = await run().then(
            () => new Error(`${op} resolved against a server that is down`),
            (e: unknown) => e,
          )
          expect(isSubstateError(err, 'STORAGE'), `${op}: ${String(err)}`).toBe(true)
          expect((err as Error).cause, `${op} keeps the driver error as cause`).toBeDefined()
        }
        expect(Date.now() - started).toBeLessThan(10_000)
        await s.close()
      }, 20_000)
    }

    it('closes cleanly', async () => {
      for (const s of open.splice(0)) await s.close()
      await factory.cleanup?.()
      expect(open).toHaveLength(0)
    })
  })
}
