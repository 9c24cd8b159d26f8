import { isSubstateError } from '../errors.js'
import { del, expect, fresh, inc, it, type StorageSuite, set } from './describe-storage-kit.js'

/**
 * Concurrent writers: updaters from many storages and from separate connections (processes), heavy
 * contention, idempotency keys raced from separate connections, blind writes.
 */
export function describeConcurrency({ factory, make, independent }: StorageSuite): void {
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
}

/** Sustained contention: 8 connections x 500 updaters on one property, every one applied. */
export function describeSustainedContention({ independent }: StorageSuite): void {
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
}
