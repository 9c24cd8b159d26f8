import type { JsonValue } from '../json.js'
import type { Change, SubjectStorage } from '../storage.js'
import { del, expect, fresh, inc, it, type StorageSuite, set } from './describe-storage-kit.js'

/**
 * The basics of a change set, on one storage: loading, every JSON type round-tripped, the old and
 * new value of every change, deletes and flushes, all or nothing.
 */
export function describeChangeSets({ make }: StorageSuite): void {
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
}

/** Idempotency keys on one storage, listing subjects by glob, namespaces apart, values copied. */
export function describeKeysListingAndCopies({ make }: StorageSuite): void {
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
}
