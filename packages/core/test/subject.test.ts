import {
  type Change,
  createContainer,
  createMemoryStorage,
  isSubstateError,
  type JsonValue,
  PropertyNotFoundError,
  SUBJECT_DELETED,
  SUBJECT_PROPERTY_CHANGED,
  SUBJECT_PROPERTY_DELETED,
  type SubjectStorage,
  type SubstateEvent,
} from '@substate/core'
import { describe, expect, it } from 'vitest'

/** Memory storage whose next operations fail while `down` is set (a real outage, simulated). */
function flakyStorage(): SubjectStorage & { down: boolean; commits: Change[][] } {
  const inner = createMemoryStorage()
  const s = {
    ...inner,
    down: false,
    commits: [] as Change[][],
    async commit(
      subject: string,
      changes: readonly Change[],
      options?: { idempotencyKey?: string },
    ) {
      if (s.down) throw new Error('connection refused')
      s.commits.push([...changes])
      return inner.commit(subject, changes, options)
    },
    async load(subject: string) {
      if (s.down) throw new Error('connection refused')
      return inner.load(subject)
    },
  }
  return s
}

const changes = (c: ReturnType<typeof createContainer>) => {
  const events: SubstateEvent[] = []
  c.events$.subscribe((e) => events.push(e))
  return events
}

describe('subjects', () => {
  it('keeps one live state per name (identity map)', async () => {
    const c = createContainer()
    expect(c.subject('a')).toBe(c.subject('a'))
    await c.subject('a').set('x', 1)
    expect(await c.subject('a').get('x')).toBe(1)
    expect(() => c.subject('')).toThrow(TypeError)
  })

  it('200 concurrent cached increments from separate subject() calls end at 200, with 200 events', async () => {
    const storage = createMemoryStorage()
    const c = createContainer({ storage })
    const events = changes(c)
    await Promise.all(
      Array.from({ length: 200 }, () => c.subject('counter:1').set('n', (n = 0) => n + 1)),
    )
    expect(await c.subject('counter:1').get('n')).toBe(200)
    const changed = events.filter((e) => e.type === SUBJECT_PROPERTY_CHANGED)
    expect(changed).toHaveLength(200)
    expect(changed.map((e) => e.newValue)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1))
    await c.subject('counter:1').store()
    expect((await storage.load('counter:1')).props).toEqual({ n: 200 })
  })

  it('delete-then-set-then-store keeps the value (KRules loses it)', async () => {
    const storage = createMemoryStorage()
    const c = createContainer({ storage })
    const s = c.subject('d:1')
    await s.set('p', 'first')
    await s.store()
    await s.delete('p')
    await s.set('p', 'second')
    await s.store()
    expect((await storage.load('d:1')).props).toEqual({ p: 'second' })
    // and the other way round: set then delete stores the deletion
    await s.set('q', 1)
    await s.delete('q')
    await s.store()
    expect((await storage.load('d:1')).props).toEqual({ p: 'second' })
  })

  it('rejects non-JSON values at set with a TypeError naming the property, synchronously', () => {
    const s = createContainer().subject('v:1')
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    const bad: Array<[string, unknown]> = [
      ['fn', { f: () => 1 }],
      ['map', new Map()],
      ['cycle', cyclic],
      ['undef', undefined],
      ['big', 10n],
      ['nan', Number.NaN],
      ['date', { at: new Date() }],
      ['sym', Symbol('x')],
    ]
    for (const [name, value] of bad) {
      expect(() => s.set(name, value as JsonValue), name).toThrow(TypeError)
      expect(() => s.set(name, value as JsonValue), name).toThrow(
        new RegExp(`property "${name}[".[]`),
      )
    }
    expect(s.toJSON().props).toEqual({})
  })

  it('rejects an updater that returns a non-JSON value, and keeps the old value', async () => {
    const s = createContainer().subject('v:2')
    await s.set('n', 1)
    await expect(s.set('n', () => new Map() as never)).rejects.toThrow(TypeError)
    expect(await s.get('n')).toBe(1)
  })

  it('copies values in and out: mutation after set or get changes nothing stored or delivered', async () => {
    const storage = createMemoryStorage()
    const c = createContainer({ storage })
    const delivered: JsonValue[] = []
    c.handlers().on(SUBJECT_PROPERTY_CHANGED, async (ctx) => {
      await new Promise((r) => setTimeout(r, 1))
      delivered.push(structuredClone(ctx.newValue as JsonValue))
    })
    const s = c.subject('c:1')
    const value = { tags: ['a'], n: 1 }
    const pending = s.set('v', value)
    value.tags.push('b')
    value.n = 2
    await pending
    const got = await s.get<{ tags: string[]; n: number }>('v')
    got.tags.push('c')
    await s.store()
    expect(await s.get('v')).toEqual({ tags: ['a'], n: 1 })
    expect((await storage.load('c:1')).props.v).toEqual({ tags: ['a'], n: 1 })
    expect(delivered).toEqual([{ tags: ['a'], n: 1 }])
  })

  it('emits only on a real change (deep equality), not when muted; extra reaches handlers', async () => {
    const c = createContainer()
    const events = changes(c)
    const s = c.subject('e:1')
    await s.set('o', { a: [1, 2], b: { c: true } })
    await s.set('o', { b: { c: true }, a: [1, 2] }) // same value, other key order
    await s.set('o', { a: [1, 2], b: { c: false } })
    await s.set('m', 1, { muted: true })
    await s.set('x', 'y', { extra: { reason: 'maintenance' } })
    expect(events.map((e) => [e.propertyName, e.oldValue, e.newValue])).toEqual([
      ['o', undefined, { a: [1, 2], b: { c: true } }],
      ['o', { a: [1, 2], b: { c: true } }, { a: [1, 2], b: { c: false } }],
      ['x', undefined, 'y'],
    ])
    expect(events[2]?.extra).toEqual({ reason: 'maintenance' })
    expect(events[0]?.payload).toEqual({
      property_name: 'o',
      old_value: null, // a new property: null on the wire, as KRules sends it
      value: { a: [1, 2], b: { c: true } },
    })
    expect(await s.get('m')).toBe(1)
  })

  it('deletes: an event only when the property existed, with the KRules payload', async () => {
    const c = createContainer()
    const events = changes(c)
    const s = c.subject('del:1')
    await s.set('p', 1, { muted: true })
    expect(await s.delete('p')).toBe(true)
    expect(await s.delete('p')).toBe(false)
    expect(events).toHaveLength(1)
    expect(events[0]).toMatchObject({
      type: SUBJECT_PROPERTY_DELETED,
      propertyName: 'p',
      oldValue: 1,
      payload: { property_name: 'p', old_value: 1 },
    })
  })

  it('get: default, PropertyNotFoundError, cache: false; has, keys, toJSON', async () => {
    const storage = createMemoryStorage()
    const c = createContainer({ storage })
    const s = c.subject('g:1')
    await expect(s.get('missing')).rejects.toBeInstanceOf(PropertyNotFoundError)
    expect(await s.get('missing', { default: 7 })).toBe(7)
    await s.set('a', 1)
    expect(await s.has('a')).toBe(true)
    expect(await s.has('b')).toBe(false)
    expect(await s.keys()).toEqual(['a'])
    expect(await s.get('a', { cache: false, default: 'not stored yet' })).toBe('not stored yet')
    await s.store()
    expect(await s.get('a', { cache: false })).toBe(1)
    expect(JSON.parse(JSON.stringify(s))).toEqual({ name: 'g:1', props: { a: 1 }, ext: {} })
  })

  it('write-through: stored now, event after commit with exactly the stored old and new values', async () => {
    const storage = createMemoryStorage()
    const c = createContainer({ storage })
    const events = changes(c)
    await storage.commit('w:1', [{ op: 'set', kind: 'prop', name: 'n', value: 10 }]) // another writer
    const s = c.subject('w:1')
    let storedAtEvent: JsonValue | undefined
    c.handlers().on(SUBJECT_PROPERTY_CHANGED, async () => {
      storedAtEvent = (await storage.get('w:1', 'prop', 'n'))?.value
    })
    expect(await s.set('n', (n = 0) => n + 1, { cache: false })).toBe(11)
    expect(storedAtEvent).toBe(11)
    expect(events[0]).toMatchObject({ oldValue: 10, newValue: 11 })
    expect(s.dirty).toBe(false)
    await s.set('n', 11, { cache: false }) // unchanged: no event
    expect(events).toHaveLength(1)
    expect(await s.delete('n', { cache: false })).toBe(true)
    expect(await storage.get('w:1', 'prop', 'n')).toBeUndefined()
  })

  it('write-through commits a pending cached write of the same property with it', async () => {
    const storage = createMemoryStorage()
    const s = createContainer({ storage }).subject('w:2')
    await s.set('n', 5) // cached
    await s.set('n', (n = 0) => n + 1, { cache: false })
    expect((await storage.load('w:2')).props).toEqual({ n: 6 })
    expect(await s.get('n')).toBe(6)
  })

  it('store() commits all or nothing; on failure the writes stay pending and it rejects', async () => {
    const storage = flakyStorage()
    const c = createContainer({ storage })
    const s = c.subject('st:1')
    await s.set('a', 1)
    await s.set('b', 2)
    await s.setExt('tag', 'x')
    storage.down = true
    const err = await s.store().catch((e: unknown) => e)
    expect(isSubstateError(err, 'STORAGE')).toBe(true)
    expect(String(err)).toMatch(/store of st:1 failed: connection refused/)
    expect(s.dirty).toBe(true)
    await s.set('a', (n = 0) => n + 10) // a later write folds over the failed ones
    storage.down = false
    await s.store()
    expect(await storage.load('st:1')).toEqual({ props: { a: 11, b: 2 }, ext: { tag: 'x' } })
    expect(storage.commits).toHaveLength(1)
    expect(s.dirty).toBe(false)
  })

  it('a load failure is a StorageError the caller sees', async () => {
    const storage = flakyStorage()
    storage.down = true
    const s = createContainer({ storage }).subject('lf:1')
    await expect(s.set('a', 1)).rejects.toSatisfy((e) => isSubstateError(e, 'STORAGE'))
    storage.down = false
    expect(await s.set('a', 1)).toBe(1)
  })

  it('when another process wrote in between, store() takes the stored value and announces it', async () => {
    const storage = createMemoryStorage()
    const c = createContainer({ storage })
    const events = changes(c)
    const s = c.subject('race:1')
    await s.set('n', (n = 0) => n + 1) // cache: 1
    await storage.commit('race:1', [{ op: 'set', kind: 'prop', name: 'n', value: 41 }]) // other process
    await s.store() // updater applied under CAS on 41 → 42
    expect(await s.get('n')).toBe(42)
    expect(events.map((e) => [e.oldValue, e.newValue])).toEqual([
      [undefined, 1],
      [1, 42],
    ])
  })

  it('ext properties: no events, stored, separate from props', async () => {
    const storage = createMemoryStorage()
    const c = createContainer({ storage })
    const events = changes(c)
    const s = c.subject('x:1')
    await s.setExt('tags', ['a'])
    await s.set('tags', 'prop')
    expect(await s.getExt('tags')).toEqual(['a'])
    expect(await s.getExtProps()).toEqual({ tags: ['a'] })
    await s.store()
    await s.setExt('owner', 'me', { cache: false })
    expect(await storage.load('x:1')).toEqual({
      props: { tags: 'prop' },
      ext: { tags: ['a'], owner: 'me' },
    })
    expect(await s.deleteExt('tags')).toBe(true)
    await s.store()
    expect((await storage.load('x:1')).ext).toEqual({ owner: 'me' })
    expect(events).toHaveLength(1)
  })

  it('flush() deletes from storage, emits subject-property-deleted per property (as KRules does), then subject-deleted with what it held', async () => {
    const storage = createMemoryStorage()
    const c = createContainer({ storage })
    const events = changes(c)
    const s = c.subject('f:1')
    await s.set('a', 1, { muted: true })
    await s.set('b', 'x', { muted: true })
    await s.setExt('e', 2)
    await s.store()
    await s.flush()
    expect(await storage.load('f:1')).toEqual({ props: {}, ext: {} })
    expect(events.map((e) => [e.type, e.propertyName, e.oldValue])).toEqual([
      [SUBJECT_PROPERTY_DELETED, 'a', 1],
      [SUBJECT_PROPERTY_DELETED, 'b', 'x'],
      [SUBJECT_DELETED, undefined, undefined],
    ])
    expect(events[0]!.payload).toEqual({ property_name: 'a', old_value: 1 })
    expect(events[2]).toMatchObject({
      type: SUBJECT_DELETED,
      payload: { props: { a: 1, b: 'x' }, ext_props: { e: 2 } },
    })
    expect(await s.keys()).toEqual([])
  })

  it('changes$ and watch(prop) observe one subject', async () => {
    const c = createContainer()
    const seen: string[] = []
    const watched: Array<JsonValue | undefined> = []
    const s = c.subject('o:1')
    s.changes$.subscribe((e) => seen.push(`${e.type}:${e.propertyName}`))
    s.watch('cpu').subscribe((v) => watched.push(v))
    await s.set('cpu', 1)
    await s.set('mem', 2)
    await c.subject('o:2').set('cpu', 3)
    await s.delete('cpu')
    expect(seen).toEqual([
      `${SUBJECT_PROPERTY_CHANGED}:cpu`,
      `${SUBJECT_PROPERTY_CHANGED}:mem`,
      `${SUBJECT_PROPERTY_DELETED}:cpu`,
    ])
    expect(watched).toEqual([1, undefined])
  })

  it('a handler may write its own subject write-through (no deadlock on the commit chain)', async () => {
    const c = createContainer()
    c.handlers().on(SUBJECT_PROPERTY_CHANGED, async (ctx) => {
      if (ctx.propertyName === 'a') {
        await ctx.subject.set('b', 1, { cache: false })
        await ctx.subject.store()
      }
    })
    const s = c.subject('re:1')
    await s.set('a', 1, { cache: false })
    expect(await s.get('b')).toBe(1)
  })
})

describe('identity map bound', () => {
  it('evicts idle clean subjects beyond maxSubjects; dirty ones stay; evicted handles still work', async () => {
    const storage = createMemoryStorage()
    const c = createContainer({ storage, maxSubjects: 100 })
    const early = c.subject('keep:0')
    await early.set('v', 'x', { cache: false })
    const dirty = c.subject('dirty:0')
    await dirty.set('v', 'pending')
    for (let i = 0; i < 10_000; i++) {
      await c.subject(`s:${i}`).get('v', { default: null })
    }
    const live = (c as unknown as { liveSubjects: number }).liveSubjects
    expect(live).toBeLessThanOrEqual(101)
    expect(dirty.dirty).toBe(true)
    expect(c.subject('dirty:0')).toBe(dirty) // not evicted: it holds pending writes
    expect(await early.get('v')).toBe('x') // the evicted handle forwards to the live state
    await early.set('w', 1)
    await c.subject('keep:0').store()
    expect((await storage.load('keep:0')).props).toEqual({ v: 'x', w: 1 })
  })
})

describe('identity map under pressure', () => {
  it('keeps every dirty subject (never drops a pending write) and keeps working', async () => {
    const storage = createMemoryStorage()
    const c = createContainer({ storage, maxSubjects: 50 })
    for (let i = 0; i < 500; i++) await c.subject(`d:${i}`).set('v', i)
    for (let i = 0; i < 500; i++) expect(c.subject(`d:${i}`).dirty).toBe(true)
    const report = await c.close()
    expect(report.stored).toBe(500)
  })
})
