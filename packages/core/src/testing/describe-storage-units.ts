import { isSubstateError } from '../errors.js'
import type { SubjectStorage, UnitCommit } from '../storage.js'
import {
  del,
  describe,
  entry,
  expect,
  fresh,
  it,
  type StorageSuite,
  seen,
  set,
} from './describe-storage-kit.js'

const unitsOf = (s: SubjectStorage) => {
  const commitUnit = s.commitUnit?.bind(s)
  if (!commitUnit) throw new Error(`${s.name} has no commitUnit`)
  return commitUnit
}

/**
 * Units of work (`commitUnit`), where the storage has them: all or nothing over several subjects,
 * checks of what a unit read, unit keys, transfers conserving a total, and the outbox.
 */
export function describeUnits({ factory, make, independent }: StorageSuite): void {
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
}
