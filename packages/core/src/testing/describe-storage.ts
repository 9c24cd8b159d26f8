import { createServer, type Server, type Socket } from 'node:net'
import { isSubstateError } from '../errors.js'
import type { JsonValue } from '../json.js'
import type { Change, SubjectStorage, UnitCommit } from '../storage.js'
import {
  afterAll,
  del,
  describe,
  entry,
  expect,
  fresh,
  inc,
  it,
  seen,
  set,
} from './describe-storage-kit.js'
import type { StorageFactory } from './storage-factory.js'

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
    it.skipIf(!factory.createIndependent)(
      'applies updaters from separate connections (processes) by compare-and-set, exactly',
      async () => {
        const ns = fresh()
        const storages = await Promise.all(Array.from({ length: 4 }, () => independent(ns)))
        // A subject nobody has written yet: creating it must not race either.
        const subject = `brand-new:${fresh()}`
        const results = await Promise.all(
          storages.flatMap((s) =>
            Array.from({ length: 50 }, () => s.commit(subject, [inc('n'), set('last', 1)])),
          ),
        )
        expect(await storages[0]!.get(subject, 'prop', 'n')).toEqual({ value: 200 })
        // Every commit saw a distinct old value: 0 (absent) through 199, each exactly once.
        const olds = results.map((r) => (r.changes[0]!.oldValue as number | undefined) ?? 0)
        expect(olds.sort((a, b) => a - b)).toEqual(Array.from({ length: 200 }, (_, i) => i))
      },
    )

    it.skipIf(!factory.createIndependent)(
      'applies a key once when separate connections (processes) commit it at the same time',
      async () => {
        const ns = fresh()
        const storages = await Promise.all(Array.from({ length: 4 }, () => independent(ns)))
        // Odd rounds write blind (the old values not needed): the key is still applied once.
        for (let round = 0; round < 10; round++) {
          const results = await Promise.all(
            storages.map((s, i) =>
              s.commit(`order:${round}`, [set(`by${i}`, i)], {
                idempotencyKey: 'evt',
                oldValues: round % 2 === 0,
              }),
            ),
          )
          expect(results.filter((r) => !r.duplicate)).toHaveLength(1)
          expect(Object.keys((await storages[0]!.load(`order:${round}`)).props)).toHaveLength(1)
        }
      },
    )

    it('writes sets and deletes blind with oldValues: false, exactly, updaters still by CAS', async () => {
      const ns = fresh()
      const s = await make(ns)
      const blind = { oldValues: false }
      await s.commit('d:1', [set('a', 1), set('b', 2), set('n', 5), set('x', 'e', 'ext')])
      const r = await s.commit(
        'd:1',
        [set('a', { v: 10 }), del('b'), inc('n'), set('y', [2], 'ext'), del('x', 'ext')],
        blind,
      )
      // Sets and deletes need not be read (their old values may be unknown); the updater was.
      expect(r.changes.map(({ kind, name, newValue }) => ({ kind, name, newValue }))).toEqual([
        { kind: 'prop', name: 'a', newValue: { v: 10 } },
        { kind: 'prop', name: 'b', newValue: undefined },
        { kind: 'prop', name: 'n', newValue: 6 },
        { kind: 'ext', name: 'y', newValue: [2] },
        { kind: 'ext', name: 'x', newValue: undefined },
      ])
      expect(r.changes[2]!.oldValue).toBe(5)
      expect(await s.load('d:1')).toEqual({ props: { a: { v: 10 }, n: 6 }, ext: { y: [2] } })
      if (factory.writeRaw) {
        // An updater whose remembered value is stale still loses its CAS and re-runs.
        await factory.writeRaw(ns, 'd:1', 'prop', 'n', '100')
        const again = await s.commit('d:1', [inc('n'), set('a', 0)], blind)
        expect(again.changes[0]).toMatchObject({ oldValue: 100, newValue: 101 })
        expect(again.changes[1]).toMatchObject({ newValue: 0 })
      }
      // Idempotency keys are honoured: the second commit with the key writes nothing.
      const k = { oldValues: false, idempotencyKey: 'evt-b' }
      expect((await s.commit('d:2', [set('a', 1)], k)).duplicate ?? false).toBe(false)
      expect(await s.commit('d:2', [set('a', 2)], k)).toEqual({ changes: [], duplicate: true })
      expect(await s.get('d:2', 'prop', 'a')).toEqual({ value: 1 })
      // Batches of many subjects, commits of one subject in call order, deletes emptying a subject.
      await Promise.all(
        Array.from({ length: 100 }, (_, i) => s.commit(`m:${i}`, [set('v', i)], blind)),
      )
      // Beside them, an updater of another subject and a commit leaving only an ext property.
      const last = await Promise.all([
        s.commit('m:0', [set('v', 'x')], blind),
        s.commit('m:0', [set('v', 'y')], blind),
        s.commit('m:1', [del('v')], blind),
        s.commit('m:2', [inc('n')], blind),
        s.commit('m:3', [del('v'), set('e', true, 'ext')], blind),
      ])
      expect(last.map((c) => c.changes[0]!.newValue)).toEqual(['x', 'y', undefined, 1, undefined])
      expect(await s.load('m:2')).toEqual({ props: { v: 2, n: 1 }, ext: {} })
      expect(await s.load('m:3')).toEqual({ props: {}, ext: { e: true } })
      expect((await s.load('m:0')).props).toEqual({ v: 'y' })
      expect(await s.get('m:99', 'prop', 'v')).toEqual({ value: 99 })
      const names: string[] = []
      for await (const n of s.subjects('m:1')) names.push(n)
      expect(names).toEqual([])
    })

    it.skipIf(!factory.createOnConnection)(
      'gives up with a ConflictError after maxAttempts when another writer always wins',
      async () => {
        const own = await factory.createOnConnection!(fresh(), { maxAttempts: 3 })
        try {
          await own.storage.commit('busy', [set('n', 0)])
          let calls = 0
          const err = await own.storage
            .commit('busy', [
              {
                op: 'update',
                kind: 'prop',
                name: 'n',
                update: (n) => {
                  calls++
                  // Another writer changes the value between every read and every write.
                  own.interfere('busy', 'prop', 'n', String(calls * 100))
                  return (n as number) + 1
                },
              },
            ])
            .catch((e: unknown) => e)
          expect(isSubstateError(err, 'CONFLICT'), String(err)).toBe(true)
          expect(err).toMatchObject({ subject: 'busy', attempts: 3 })
          expect(await own.storage.get('busy', 'prop', 'n')).toEqual({ value: 300 })
        } finally {
          await own.storage.close()
          await own.end()
        }
      },
    )

    it.skipIf(!factory.createOnConnection)('does not close the client it was handed', async () => {
      const own = await factory.createOnConnection!(fresh(), {})
      try {
        await own.storage.commit('x', [set('v', 1)])
        await own.storage.close()
        await expect(own.storage.load('x')).rejects.toSatisfy((e) => isSubstateError(e, 'STORAGE'))
        // The connection still works, and holds what was written.
        expect(await own.read('x', 'prop', 'v')).toBe('1')
      } finally {
        await own.end()
      }
    })

    it.skipIf(!factory.createSilent)(
      'times out, with a StorageError naming the server, when the server accepts but never answers',
      async () => {
        const sockets: Socket[] = []
        const server: Server = createServer((socket) => sockets.push(socket))
        await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
        const port = (server.address() as { port: number }).port
        const silent = await factory.createSilent!(port, 300)
        try {
          const started = Date.now()
          const err = await silent.storage.commit('x', [inc('n')]).catch((e: unknown) => e)
          expect(Date.now() - started).toBeLessThan(2_000)
          expect(isSubstateError(err, 'STORAGE')).toBe(true)
          expect((err as Error).message).toContain(`127.0.0.1:${port}`)
          expect(isSubstateError((err as Error).cause, 'TIMEOUT')).toBe(true)
        } finally {
          for (const socket of sockets) socket.destroy()
          server.close()
          await silent.end()
        }
      },
    )

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

    /** A storage of `ns` on a connection of its own when the factory can make one. */
    const independent = async (ns: string): Promise<SubjectStorage> => {
      if (!factory.createIndependent) return make(ns)
      const s = await factory.createIndependent(ns)
      open.push(s)
      return s
    }
    const unitsOf = (s: SubjectStorage) => {
      const commitUnit = s.commitUnit?.bind(s)
      if (!commitUnit) throw new Error(`${s.name} has no commitUnit`)
      return commitUnit
    }

    it('lets 8 connections x 500 updaters on one property all succeed, exactly (retry to a deadline)', async () => {
      const ns = fresh()
      const storages = await Promise.all(Array.from({ length: 8 }, () => independent(ns)))
      const outcomes = await Promise.allSettled(
        storages.flatMap((s) => Array.from({ length: 500 }, () => s.commit('steady', [inc('n')]))),
      )
      const failures = outcomes.flatMap((o) => (o.status === 'rejected' ? [o.reason] : []))
      expect(failures.slice(0, 3)).toEqual([])
      expect(await storages[0]!.get('steady', 'prop', 'n')).toEqual({ value: 4000 })
    }, 120_000)

    describe('units of work', () => {
      it('commits a unit over three subjects all or nothing', async (ctx) => {
        const s = await make(fresh())
        if (!s.commitUnit) return ctx.skip()
        const commit = unitsOf(s)
        await s.commit('acct:a', [set('n', 1)])
        await s.commit('acct:b', [set('n', 1), set('x', 'keep')])
        // The check on the second subject fails: the first and third stay untouched.
        const failed = await commit({
          entries: [
            entry('acct:a', { n: '1' }, { n: 10 }),
            entry('acct:b', { n: '2' }, { n: 10 }),
            entry('acct:c', { n: null }, { n: 10 }),
          ],
        })
        expect(failed.status).toBe('conflict')
        if (failed.status !== 'conflict') return
        expect(failed.stale['acct:b']).toMatchObject({ props: { n: 1, x: 'keep' } })
        expect(await s.load('acct:a')).toEqual({ props: { n: 1 }, ext: {} })
        expect(await s.load('acct:c')).toEqual({ props: {}, ext: {} })
        // All checks hold: every write of every subject lands, ext properties and deletes too.
        const ok = await commit({
          entries: [
            entry('acct:a', { n: '1' }, { n: 10 }),
            {
              ...entry('acct:b', { n: '1', missing: null }, { n: 20, x: null }),
              writes: [
                { kind: 'prop', name: 'n', value: '20' },
                { kind: 'prop', name: 'x', value: null },
                { kind: 'ext', name: 'tag', value: '{"t":[1,"2"]}' },
              ],
            },
            entry('acct:c', { n: null }, { n: 30 }),
          ],
        })
        expect(ok).toEqual({ status: 'applied' })
        expect(await s.load('acct:a')).toEqual({ props: { n: 10 }, ext: {} })
        expect(await s.load('acct:b')).toEqual({ props: { n: 20 }, ext: { tag: { t: [1, '2'] } } })
        expect(await s.load('acct:c')).toEqual({ props: { n: 30 }, ext: {} })
        // A subject left with no property is gone.
        expect(await commit({ entries: [entry('acct:c', { n: '30' }, { n: null })] })).toEqual({
          status: 'applied',
        })
        const names: string[] = []
        for await (const n of s.subjects('acct:*')) names.push(n)
        expect(names.sort()).toEqual(['acct:a', 'acct:b'])
        // A unit that only reads commits nothing, and still checks.
        expect(await commit({ entries: [entry('acct:a', { n: '10' }, {})] })).toEqual({
          status: 'applied',
        })
        expect((await commit({ entries: [entry('acct:a', { n: '11' }, {})] })).status).toBe(
          'conflict',
        )
      })

      it('catches a write made by another connection between the read and the commit', async (ctx) => {
        const ns = fresh()
        const s = await make(ns)
        if (!s.commitUnit) return ctx.skip()
        const other = await independent(ns)
        await s.commit('cc:1', [set('v', { deep: [1, 2] }), set('w', 'same')])
        const read = await s.load('cc:1')
        await other.commit('cc:1', [set('v', { deep: [1, 3] })])
        const r = await unitsOf(s)({
          entries: [entry('cc:1', { v: seen(read, 'v'), w: seen(read, 'w') }, { w: 'new' })],
        })
        expect(r.status).toBe('conflict')
        if (r.status === 'conflict')
          expect(r.stale['cc:1']?.props).toEqual({ v: { deep: [1, 3] }, w: 'same' })
        expect(await other.get('cc:1', 'prop', 'w')).toEqual({ value: 'same' })
        // Ext properties are checked as well, and a property that appeared since.
        const again = await s.load('cc:1')
        await other.commit('cc:1', [set('created', 1, 'ext')])
        const r2 = await unitsOf(s)({
          entries: [
            {
              subject: 'cc:1',
              checks: [
                { kind: 'prop', name: 'v', expect: seen(again, 'v') },
                { kind: 'ext', name: 'created', expect: null },
              ],
              writes: [{ kind: 'prop', name: 'w', value: '"new"' }],
            },
          ],
        })
        expect(r2.status).toBe('conflict')
      })

      it.skipIf(!factory.writeRaw)(
        'checks values another tool wrote, by their stored text, and catches its writes',
        async (ctx) => {
          const ns = fresh()
          const s = await make(ns)
          if (!s.commitUnit) return ctx.skip()
          await s.commit('kr:1', [set('keep', 1)])
          // Python's json.dumps spacing, an integer above 2^53, a bare NaN.
          await factory.writeRaw!(ns, 'kr:1', 'prop', 'spaced', '{"a": [1, 2]}')
          await factory.writeRaw!(ns, 'kr:1', 'prop', 'big', '12345678901234567890')
          const read = await s.load('kr:1')
          expect(read.props.spaced).toEqual({ a: [1, 2] })
          expect(read.props.big).toBe(Number('12345678901234567890'))
          expect(read.raw?.prop?.big).toBe('12345678901234567890')
          const r = await unitsOf(s)({
            entries: [
              entry(
                'kr:1',
                { spaced: seen(read, 'spaced'), big: seen(read, 'big'), keep: seen(read, 'keep') },
                { keep: 2 },
              ),
            ],
          })
          expect(r).toEqual({ status: 'applied' })
          // A property this unit did not write keeps its exact stored text.
          const after = await s.load('kr:1')
          expect(after.raw?.prop?.big).toBe('12345678901234567890')
          // A write by the other tool, after the read, is caught.
          await factory.writeRaw!(ns, 'kr:1', 'prop', 'big', '12345678901234567891')
          const r2 = await unitsOf(s)({
            entries: [entry('kr:1', { big: seen(after, 'big') }, { keep: 3 })],
          })
          expect(r2.status).toBe('conflict')
          if (r2.status === 'conflict')
            expect(r2.stale['kr:1']?.raw?.prop?.big).toBe('12345678901234567891')
          expect(await s.get('kr:1', 'prop', 'keep')).toEqual({ value: 2 })
        },
      )

      it.skipIf(!factory.corrupt)(
        'a unit whose second subject cannot be written leaves the first untouched',
        async (ctx) => {
          const ns = fresh()
          const s = await make(ns)
          if (!s.commitUnit) return ctx.skip()
          await s.commit('u:a', [set('n', 1)])
          await factory.corrupt!(ns, 'u:b')
          const failed = await unitsOf(s)({
            entries: [entry('u:a', { n: '1' }, { n: 2 }), entry('u:b', {}, { n: 2 })],
          }).then(
            (r) => new Error(`resolved ${JSON.stringify(r)}`),
            (e: unknown) => e,
          )
          expect(isSubstateError(failed, 'STORAGE'), String(failed)).toBe(true)
          expect(await s.load('u:a')).toEqual({ props: { n: 1 }, ext: {} })
          // Units committed alongside it are not affected.
          expect(await unitsOf(s)({ entries: [entry('u:a', { n: '1' }, { n: 3 })] })).toEqual({
            status: 'applied',
          })
          expect(await s.load('u:a')).toEqual({ props: { n: 3 }, ext: {} })
        },
      )

      it('checks the names a unit saw', async (ctx) => {
        const ns = fresh()
        const s = await make(ns)
        if (!s.commitUnit) return ctx.skip()
        const other = await independent(ns)
        const names = (subject: string, prop: string[], ext: string[] = []): UnitCommit => ({
          entries: [
            {
              subject,
              checks: [],
              names: [
                { kind: 'prop', names: prop },
                { kind: 'ext', names: ext },
              ],
              writes: [{ kind: 'ext', name: 'seen', value: 'true' }],
            },
          ],
        })
        expect(await unitsOf(s)(names('nm:new', []))).toEqual({ status: 'applied' })
        expect((await unitsOf(s)(names('nm:new', []))).status).toBe('conflict')
        expect(await unitsOf(s)(names('nm:new', [], ['seen']))).toEqual({ status: 'applied' })
        await s.commit('nm:1', [set('a', 1), set('b', 2)])
        expect(await unitsOf(s)(names('nm:1', ['b', 'a']))).toEqual({ status: 'applied' })
        await other.commit('nm:1', [set('c', 3)])
        expect((await unitsOf(s)(names('nm:1', ['a', 'b'], ['seen']))).status).toBe('conflict')
        await other.commit('nm:1', [del('c'), del('b')])
        expect((await unitsOf(s)(names('nm:1', ['a', 'b'], ['seen']))).status).toBe('conflict')
        expect(await unitsOf(s)(names('nm:1', ['a'], ['seen']))).toEqual({ status: 'applied' })
      })

      it('applies a unit key once, and keeps keys that a naive join would confuse apart', async (ctx) => {
        const ns = fresh()
        const s = await make(ns)
        if (!s.commitUnit) return ctx.skip()
        const other = await independent(ns)
        const unit = (v: number): UnitCommit => ({
          key: 'evt-1',
          entries: [entry('dk:1', {}, { v }), entry('dk:2', {}, { v })],
        })
        expect(await unitsOf(s)(unit(1))).toEqual({ status: 'applied' })
        expect(await unitsOf(other)(unit(2))).toEqual({ status: 'duplicate' })
        expect(await s.get('dk:2', 'prop', 'v')).toEqual({ value: 1 })
        // Redelivered concurrently from two connections: applied once.
        const both = await Promise.all([
          unitsOf(s)({ key: 'evt-2', entries: [entry('dk:3', {}, { by: 's' })] }),
          unitsOf(other)({ key: 'evt-2', entries: [entry('dk:3', {}, { by: 'o' })] }),
        ])
        expect(both.map((r) => r.status).sort()).toEqual(['applied', 'duplicate'])
        // Commit keys are per subject; tuples are encoded, not joined.
        for (const sep of ['\n', ':', '"', ',']) {
          const a = await s.commit(`a${sep}b`, [set('v', 1)], { idempotencyKey: 'c' })
          const b = await s.commit('a', [set('v', 1)], { idempotencyKey: `b${sep}c` })
          expect(a.duplicate ?? false, JSON.stringify(sep)).toBe(false)
          expect(b.duplicate ?? false, JSON.stringify(sep)).toBe(false)
        }
        expect(await s.get('a', 'prop', 'v')).toEqual({ value: 1 })
      })

      it('conserves the total under concurrent transfer units from separate connections', async (ctx) => {
        const ns = fresh()
        const first = await make(ns)
        if (!first.commitUnit) return ctx.skip()
        const storages = [first, await independent(ns), await independent(ns)]
        const accounts = ['t0', 't1', 't2', 't3', 't4']
        for (const a of accounts) await first.commit(a, [set('balance', 100)])
        let conflicts = 0
        const transfer = async (s: SubjectStorage, i: number): Promise<void> => {
          const from = accounts[i % 5]!
          const to = accounts[(i * 3 + 1) % 5]!
          if (from === to) return
          const amount = 1 + (i % 37)
          for (;;) {
            const [a, b] = await Promise.all([s.load(from), s.load(to)])
            const fromBalance = a.props.balance as number
            const toBalance = b.props.balance as number
            if (fromBalance < amount) {
              // Nothing to move: still a unit that read the balance.
              const r = await unitsOf(s)({
                entries: [entry(from, { balance: seen(a, 'balance') }, {})],
              })
              if (r.status === 'applied') return
              conflicts++
              continue
            }
            const r = await unitsOf(s)({
              entries: [
                entry(from, { balance: seen(a, 'balance') }, { balance: fromBalance - amount }),
                entry(to, { balance: seen(b, 'balance') }, { balance: toBalance + amount }),
              ],
            })
            if (r.status === 'applied') return
            conflicts++
          }
        }
        await Promise.all(
          Array.from({ length: 90 }, (_, i) => transfer(storages[i % storages.length]!, i)),
        )
        let total = 0
        for (const a of accounts) {
          const v = (await first.get(a, 'prop', 'balance'))!.value as number
          expect(v).toBeGreaterThanOrEqual(0)
          total += v
        }
        expect(total).toBe(500)
        expect(conflicts).toBeGreaterThanOrEqual(0)
      }, 60_000)

      it('writes outbox messages only with an applied unit; claims each once per lease', async (ctx) => {
        const ns = fresh()
        const s = await make(ns)
        if (!s.commitUnit || !s.outbox) return ctx.skip()
        const other = await independent(ns)
        const box = s.outbox
        const otherBox = other.outbox!
        expect(await box.size()).toBe(0)
        await s.commit('ob:1', [set('n', 1)])
        const msgs = [
          { id: 'u1#0', body: '{"type":"a"}' },
          { id: 'u1#1', body: '{"type":"b"}' },
        ]
        const failed = await unitsOf(s)({
          key: 'u1',
          entries: [entry('ob:1', { n: '2' }, { n: 3 })],
          outbox: msgs,
          owner: 'me',
        })
        expect(failed.status).toBe('conflict')
        expect(await box.size()).toBe(0)
        const applied = await unitsOf(s)({
          key: 'u1',
          entries: [entry('ob:1', { n: '1' }, { n: 2 })],
          outbox: msgs,
          owner: 'me',
          lease: 60_000,
        })
        expect(applied).toEqual({ status: 'applied' })
        expect(await box.size()).toBe(2)
        // A redelivered unit writes no second copy.
        const again = await unitsOf(s)({
          key: 'u1',
          entries: [entry('ob:1', {}, { n: 9 })],
          outbox: msgs,
          owner: 'me',
        })
        expect(again).toEqual({ status: 'duplicate' })
        expect(await otherBox.size()).toBe(2)
        // Leased to the committing process: nobody else may claim them yet.
        expect(await otherBox.claim('other', 10, 60_000)).toEqual([])
        // A unit whose lease is already over: claimable at once, oldest first, once per lease.
        await unitsOf(s)({
          entries: [entry('ob:2', {}, { n: 1 })],
          outbox: [{ id: 'u2#0', body: '{"type":"c"}' }],
          owner: 'crashed',
          lease: 0,
        })
        await unitsOf(s)({
          entries: [entry('ob:3', {}, { n: 1 })],
          outbox: [{ id: 'u3#0', body: '{"type":"d"}' }],
          owner: 'crashed',
          lease: 0,
        })
        const claims = await Promise.all([
          otherBox.claim('other', 1, 60_000),
          box.claim('me', 1, 60_000),
        ])
        expect(
          claims
            .flat()
            .map((m) => m.id)
            .sort(),
        ).toEqual(['u2#0', 'u3#0'])
        expect(await otherBox.claim('other', 10, 60_000)).toEqual([])
        await box.remove(['u1#0', 'u2#0', 'u3#0', 'unknown'])
        expect(await otherBox.size()).toBe(1)
        await box.remove(['u1#1'])
        expect(await box.size()).toBe(0)
      })
    })

    afterAll(async () => {
      for (const s of open.splice(0)) await s.close()
      await factory.cleanup?.()
    })
  })
}
