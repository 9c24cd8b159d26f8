import { createServer, type Server } from 'node:net'
import { type Change, isSubstateError, StorageError, type SubjectStorage } from '@substate/core'
import { describeStorage } from '@substate/core/testing'
import { createRedisStorage } from '@substate/storage-redis'
import { describeWith, redisUrl } from '@substate/test-support/services'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, expect, it, vi } from 'vitest'

const run = `substate-test:${process.pid}:${Date.now().toString(36)}:`
const inc = (name: string): Change => ({
  op: 'update',
  kind: 'prop',
  name,
  update: (n) => (typeof n === 'number' ? n : 0) + 1,
})

/** Deletes every key this run wrote (subject hashes and idempotency keys). */
async function sweep(client: Redis): Promise<void> {
  for (const match of [`s:${run}*`, `i:${run}*`, `u:["${run}*`, `o:["${run}*`]) {
    let cursor = '0'
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', match, 'COUNT', 1000)
      cursor = next
      if (keys.length > 0) await client.del(...keys)
    } while (cursor !== '0')
  }
}

describeWith('redis', 'storage-redis', () => {
  let client: Redis
  let writer: Redis | undefined
  const unreachable: Redis[] = []
  const independent: Redis[] = []

  describeStorage('redis', {
    create(ns) {
      client ??= new Redis(redisUrl!)
      return createRedisStorage({ client, prefix: `${run}${ns}:` })
    },
    createIndependent(ns) {
      const own = new Redis(redisUrl!)
      independent.push(own)
      return createRedisStorage({ client: own, prefix: `${run}${ns}:` })
    },
    createUnreachable() {
      // A closed port, with ioredis' defaults (reconnect forever, offline queue on).
      const down = new Redis('redis://127.0.0.1:1')
      unreachable.push(down)
      return createRedisStorage({ client: down })
    },
    async writeRaw(ns, subject, kind, name, text) {
      writer ??= new Redis(redisUrl!)
      await writer.hset(`s:${run}${ns}:${subject}`, (kind === 'prop' ? 'p' : 'e') + name, text)
    },
    async cleanup() {
      await writer?.quit()
      for (const c of unreachable) c.disconnect()
      for (const c of independent) await c.quit()
      if (client) await sweep(client)
    },
  })

  let raw: Redis
  const opened: SubjectStorage[] = []
  const storage = (prefix: string, options: { client?: Redis; maxAttempts?: number } = {}) => {
    const s = createRedisStorage({
      client: options.client ?? raw,
      prefix: `${run}${prefix}:`,
      ...options,
    })
    opened.push(s)
    return s
  }
  beforeAll(() => {
    raw = new Redis(redisUrl!)
  })
  afterAll(async () => {
    for (const s of opened) await s.close()
    await sweep(raw)
    await raw.quit()
  })

  it('keeps the KRules layout: one hash per subject, p/e fields of JSON text', async () => {
    const s = storage('layout')
    await s.commit('device:1', [
      { op: 'set', kind: 'prop', name: 'cpu', value: 95 },
      { op: 'set', kind: 'prop', name: 'tags', value: ['a', 'b'] },
      { op: 'set', kind: 'ext', name: 'owner', value: { id: 1 } },
      inc('count'),
    ])
    expect(await raw.hgetall(`s:${run}layout:device:1`)).toEqual({
      pcpu: '95',
      ptags: '["a","b"]',
      eowner: '{"id":1}',
      pcount: '1',
    })
  })

  it('reads what a Python KRules service wrote (json.dumps spacing, foreign fields ignored)', async () => {
    const key = `s:${run}py:sensor:7`
    await raw.hset(key, 'ptemp', '21.5', 'pmeta', '{"unit": "C", "ok": true}', 'ezone', '"north"')
    await raw.hset(key, 'xother', 'not ours')
    const s = storage('py')
    // The stored text of a value that JSON.stringify would write differently is kept (`raw`).
    expect(await s.load('sensor:7')).toEqual({
      props: { temp: 21.5, meta: { unit: 'C', ok: true } },
      ext: { zone: 'north' },
      raw: { prop: { meta: '{"unit": "C", "ok": true}' } },
    })
    // An updater compares against the stored text exactly, so foreign formatting is no conflict.
    const r = await s.commit('sensor:7', [
      {
        op: 'update',
        kind: 'prop',
        name: 'meta',
        update: (m) => ({ ...(m as object), ok: false }),
      },
    ])
    expect(r.changes[0]).toMatchObject({
      oldValue: { unit: 'C', ok: true },
      newValue: { unit: 'C', ok: false },
    })
  })

  it('loads the rest of a subject when a value is not JSON (a bare NaN from Python)', async () => {
    const key = `s:${run}nan:sensor:8`
    await raw.hset(key, 'ptemp', 'NaN', 'pok', '1', 'ebig', '123456789012345678901')
    const s = storage('nan')
    const snap = await s.load('sensor:8')
    expect(snap.props).toEqual({ ok: 1 })
    expect(snap.ext).toEqual({ big: Number('123456789012345678901') })
    expect(snap.raw).toEqual({ prop: { temp: 'NaN' }, ext: { big: '123456789012345678901' } })
    expect(Object.keys(snap.invalid?.prop ?? {})).toEqual(['temp'])
    const err = await s.get('sensor:8', 'prop', 'temp').catch((e: unknown) => e)
    expect(isSubstateError(err, 'STORAGE')).toBe(true)
    // A unit that read the bad value checks its text; writing it replaces it.
    const r = await s.commitUnit!({
      entries: [
        {
          subject: 'sensor:8',
          checks: [{ kind: 'prop', name: 'temp', expect: 'NaN' }],
          writes: [{ kind: 'prop', name: 'temp', value: '20' }],
        },
      ],
    })
    expect(r).toEqual({ status: 'applied' })
    expect(await raw.hget(key, 'ptemp')).toBe('20')
    expect(await raw.hget(key, 'ebig')).toBe('123456789012345678901')
  })

  it('keeps unit keys and the outbox outside the s: and i: namespaces, unit keys with a TTL', async () => {
    const s = storage('unitkeys')
    const r = await s.commitUnit!({
      key: 'evt-1',
      entries: [{ subject: 'a', checks: [], writes: [{ kind: 'prop', name: 'v', value: '1' }] }],
      outbox: [{ id: 'm1', body: '{}' }],
      owner: 'me',
    })
    expect(r).toEqual({ status: 'applied' })
    const unitKey = `u:${JSON.stringify([`${run}unitkeys:`, 'evt-1'])}`
    expect(await raw.ttl(unitKey)).toBeGreaterThan(0)
    const lease = `o:${JSON.stringify([`${run}unitkeys:`, 'lease'])}`
    expect(await raw.zcard(lease)).toBe(1)
    expect(await raw.hgetall(`s:${run}unitkeys:a`)).toEqual({ pv: '1' })
  })

  it('stores idempotency keys beside the subjects, with a TTL, outside the s: namespace', async () => {
    const s = storage('idem')
    await s.commit('order:1', [inc('n')], { idempotencyKey: 'evt-1' })
    const key = `i:${run}idem:["order:1","evt-1"]`
    expect(await raw.exists(key)).toBe(1)
    const ttl = await raw.ttl(key)
    expect(ttl).toBeGreaterThan(86_000)
    const names: string[] = []
    for await (const n of s.subjects()) names.push(n)
    expect(names).toEqual(['order:1'])
  })

  it('writes sets and deletes blind with oldValues: false, exactly, updaters still by CAS', async () => {
    const s = storage('blind')
    const blind = { oldValues: false }
    await s.commit('d:1', [
      { op: 'set', kind: 'prop', name: 'a', value: 1 },
      { op: 'set', kind: 'prop', name: 'b', value: 2 },
      { op: 'set', kind: 'prop', name: 'n', value: 5 },
      { op: 'set', kind: 'ext', name: 'x', value: 'e' },
    ])
    const r = await s.commit(
      'd:1',
      [
        { op: 'set', kind: 'prop', name: 'a', value: { v: 10 } },
        { op: 'delete', kind: 'prop', name: 'b' },
        inc('n'),
        { op: 'set', kind: 'ext', name: 'y', value: [2] },
        { op: 'delete', kind: 'ext', name: 'x' },
      ],
      blind,
    )
    // Sets and deletes were not read (their old values are unknown); the updater was.
    expect(r.changes).toEqual([
      { kind: 'prop', name: 'a', oldValue: undefined, newValue: { v: 10 } },
      { kind: 'prop', name: 'b', oldValue: undefined, newValue: undefined },
      { kind: 'prop', name: 'n', oldValue: 5, newValue: 6 },
      { kind: 'ext', name: 'y', oldValue: undefined, newValue: [2] },
      { kind: 'ext', name: 'x', oldValue: undefined, newValue: undefined },
    ])
    expect(await raw.hgetall(`s:${run}blind:d:1`)).toEqual({ pa: '{"v":10}', pn: '6', ey: '[2]' })

    // An updater whose remembered value is stale still loses its CAS and re-runs, beside blind sets.
    await raw.hset(`s:${run}blind:d:1`, 'pn', '100')
    const again = await s.commit(
      'd:1',
      [inc('n'), { op: 'set', kind: 'prop', name: 'a', value: 0 }],
      blind,
    )
    expect(again.changes[0]).toMatchObject({ oldValue: 100, newValue: 101 })
    expect(again.changes[1]).toMatchObject({ newValue: 0 })

    // Idempotency keys are honoured: the second commit with the key writes nothing.
    const k = { oldValues: false, idempotencyKey: 'evt-b' }
    expect(
      (await s.commit('d:2', [{ op: 'set', kind: 'prop', name: 'a', value: 1 }], k)).duplicate,
    ).toBeUndefined()
    expect(await s.commit('d:2', [{ op: 'set', kind: 'prop', name: 'a', value: 2 }], k)).toEqual({
      changes: [],
      duplicate: true,
    })
    expect(await s.get('d:2', 'prop', 'a')).toEqual({ value: 1 })

    // Batches of many subjects, commits of one subject in call order, deletes emptying a subject.
    await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        s.commit(`m:${i}`, [{ op: 'set', kind: 'prop', name: 'v', value: i }], blind),
      ),
    )
    const last = await Promise.all([
      s.commit('m:0', [{ op: 'set', kind: 'prop', name: 'v', value: 'x' }], blind),
      s.commit('m:0', [{ op: 'set', kind: 'prop', name: 'v', value: 'y' }], blind),
      s.commit('m:1', [{ op: 'delete', kind: 'prop', name: 'v' }], blind),
    ])
    expect(last.map((c) => c.changes[0]!.newValue)).toEqual(['x', 'y', undefined])
    expect((await s.load('m:0')).props).toEqual({ v: 'y' })
    expect(await s.get('m:99', 'prop', 'v')).toEqual({ value: 99 })
    expect(await raw.exists(`s:${run}blind:m:1`)).toBe(0)
  })

  it('applies updaters from separate clients (separate processes) by compare-and-set, exactly', async () => {
    const clients = Array.from({ length: 4 }, () => new Redis(redisUrl!))
    try {
      const stores = clients.map((c) => storage('cas', { client: c }))
      const results = await Promise.all(
        stores.flatMap((s) => Array.from({ length: 50 }, () => s.commit('hot', [inc('n')]))),
      )
      expect(await stores[0]!.get('hot', 'prop', 'n')).toEqual({ value: 200 })
      // Every commit saw a distinct old value: 0 (absent) through 199, each exactly once.
      const olds = results.map((r) => r.changes[0]!.oldValue ?? 0).sort((a, b) => +a! - +b!)
      expect(olds).toEqual(Array.from({ length: 200 }, (_, i) => i))
    } finally {
      for (const c of clients) await c.quit()
    }
  })

  it('applies a key once when separate clients (processes) commit it at the same time', async () => {
    const clients = Array.from({ length: 4 }, () => new Redis(redisUrl!))
    try {
      const stores = clients.map((c) => storage('idem-race', { client: c }))
      // Odd rounds write blind (no HMGET): the key is still applied once.
      for (let round = 0; round < 10; round++) {
        const results = await Promise.all(
          stores.map((s, i) =>
            s.commit(`order:${round}`, [{ op: 'set', kind: 'prop', name: `by${i}`, value: i }], {
              idempotencyKey: 'evt',
              oldValues: round % 2 === 0,
            }),
          ),
        )
        expect(results.filter((r) => !r.duplicate)).toHaveLength(1)
        expect(Object.keys((await stores[0]!.load(`order:${round}`)).props)).toHaveLength(1)
      }
    } finally {
      for (const c of clients) await c.quit()
    }
  })

  it('gives up with a ConflictError after maxAttempts when another writer always wins', async () => {
    const s = storage('conflict', { maxAttempts: 3 })
    const key = `s:${run}conflict:busy`
    let calls = 0
    const err = await s
      .commit('busy', [
        {
          op: 'update',
          kind: 'prop',
          name: 'n',
          update: (n) => {
            calls++
            // Another writer changes the value between every read and every write.
            void raw.hset(key, 'pn', String(calls * 100))
            return (typeof n === 'number' ? n : 0) + 1
          },
        },
      ])
      .then(
        () => undefined,
        (e: unknown) => e,
      )
    expect(isSubstateError(err, 'CONFLICT'), String(err)).toBe(true)
    expect(err).toMatchObject({ subject: 'busy', attempts: 3 })
    expect(calls).toBe(3)
    expect(await raw.hget(key, 'pn')).toBe('300')
  })

  it('re-reads before failing when an updater throws on a remembered value', async () => {
    const s = storage('stale')
    await s.commit('door', [{ op: 'set', kind: 'prop', name: 'state', value: 'open' }])
    await s.commit('door', [{ op: 'update', kind: 'prop', name: 'state', update: (v) => v! }])
    // Another process changes it: the remembered 'open' is now stale.
    await raw.hset(`s:${run}stale:door`, 'pstate', '"closed"')
    const r = await s.commit('door', [
      {
        op: 'update',
        kind: 'prop',
        name: 'state',
        update: (v) => {
          if (v === 'open') throw new Error('must be closed first')
          return 'locked'
        },
      },
    ])
    expect(r.changes[0]).toMatchObject({ oldValue: 'closed', newValue: 'locked' })
  })

  it('commits change sets larger than a Lua unpack() can take at once', async () => {
    const s = storage('large')
    const names = Array.from({ length: 2500 }, (_, i) => `f${i}`)
    const first = await s.commit('big', [
      ...names.map((name, i): Change => ({ op: 'set', kind: 'prop', name, value: i })),
      inc('n'),
    ])
    expect(first.changes).toHaveLength(2501)
    expect(await raw.hlen(`s:${run}large:big`)).toBe(2501)
    const second = await s.commit(
      'big',
      names.map((name): Change => ({ op: 'delete', kind: 'prop', name })),
    )
    expect(second.changes[2499]).toEqual({
      kind: 'prop',
      name: 'f2499',
      oldValue: 2499,
      newValue: undefined,
    })
    expect(await s.load('big')).toEqual({ props: { n: 1 }, ext: {} })
  })

  it('writes a batch of blind-set commits exactly, a key of another type failing alone', async () => {
    const s = storage('sets')
    const blind = { oldValues: false }
    const set = (name: string, value: number): Change => ({ op: 'set', kind: 'prop', name, value })
    // Not a hash: Redis refuses HSET on it (WRONGTYPE), which fails that commit and no other.
    await raw.set(`s:${run}sets:bad`, 'a string')
    const names = Array.from({ length: 2500 }, (_, i) => `f${i}`)
    await s.commit('checked', [set('n', 1)])
    const results = await Promise.allSettled([
      ...Array.from({ length: 50 }, (_, i) =>
        s.commit(`ok:${i}`, [set('v', i), set('w', -i)], blind),
      ),
      s.commit('bad', [set('v', 1)], blind),
      // More fields than one Lua unpack() takes, blind.
      s.commit(
        'wide',
        names.map((name, i) => set(name, i)),
        blind,
      ),
      // Checked commits in the same batch go through the commit script.
      s.commit('checked', [inc('n'), set('m', 2)], blind),
      s.commit('keyed', [set('v', 1)], { oldValues: false, idempotencyKey: 'k1' }),
    ])
    const failed = results.filter((r) => r.status === 'rejected')
    expect(failed).toHaveLength(1)
    const error = (failed[0] as PromiseRejectedResult).reason
    expect(error).toBeInstanceOf(StorageError)
    expect(error.message).toContain('bad')
    expect(error.message).toContain('WRONGTYPE')
    expect(error.message).not.toContain('is Redis running')
    expect(await raw.get(`s:${run}sets:bad`)).toBe('a string')
    for (let i = 0; i < 50; i++) {
      expect(await raw.hgetall(`s:${run}sets:ok:${i}`)).toEqual({ pv: `${i}`, pw: `${-i}` })
    }
    expect(await raw.hlen(`s:${run}sets:wide`)).toBe(2500)
    expect(await raw.hget(`s:${run}sets:wide`, 'pf2499')).toBe('2499')
    expect(await s.load('checked')).toEqual({ props: { n: 2, m: 2 }, ext: {} })
    expect(
      (await s.commit('keyed', [set('v', 2)], { oldValues: false, idempotencyKey: 'k1' }))
        .duplicate,
    ).toBe(true)
  })

  it('lists subjects of a prefix holding glob characters, and only those', async () => {
    const a = storage('g*[x]')
    const b = storage('g1')
    await a.commit('one', [{ op: 'set', kind: 'prop', name: 'v', value: 1 }])
    await b.commit('two', [{ op: 'set', kind: 'prop', name: 'v', value: 1 }])
    const list = async (s: SubjectStorage, p?: string) => {
      const out: string[] = []
      for await (const n of s.subjects(p)) out.push(n)
      return out
    }
    expect(await list(a)).toEqual(['one'])
    expect(await list(a, 'o*')).toEqual(['one'])
    expect(await list(a, 't*')).toEqual([])
    expect(await list(b)).toEqual(['two'])
  })

  it('prints no "Unhandled error event" when the server is unreachable before the first call', async () => {
    const logged = vi.spyOn(console, 'error').mockImplementation(() => {})
    try {
      // One connection attempt, then the client ends: its error event has been emitted by then.
      const down = new Redis('redis://127.0.0.1:1', { retryStrategy: () => null })
      createRedisStorage({ client: down })
      await new Promise<void>((resolve) => down.once('end', resolve))
      expect(logged.mock.calls.map((c) => String(c[0]))).toEqual([])
    } finally {
      logged.mockRestore()
    }
  })

  it('does not close the client it was handed', async () => {
    const c = new Redis(redisUrl!)
    const s = createRedisStorage({ client: c, prefix: `${run}close:` })
    await s.commit('x', [{ op: 'set', kind: 'prop', name: 'v', value: 1 }])
    await s.close()
    expect(c.status).toBe('ready')
    await expect(s.load('x')).rejects.toBeInstanceOf(StorageError)
    expect(await c.hget(`s:${run}close:x`, 'pv')).toBe('1')
    await c.quit()
  })

  it('times out, with a StorageError naming the server, when Redis accepts but never answers', async () => {
    const server: Server = createServer(() => {})
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const port = (server.address() as { port: number }).port
    const c = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: null })
    try {
      const s = createRedisStorage({ client: c, timeout: 300 })
      const started = Date.now()
      const err = await s.commit('x', [inc('n')]).catch((e: unknown) => e)
      expect(Date.now() - started).toBeLessThan(2_000)
      expect(isSubstateError(err, 'STORAGE')).toBe(true)
      expect((err as Error).message).toContain(`is Redis running at 127.0.0.1:${port}?`)
      expect(isSubstateError((err as Error).cause, 'TIMEOUT')).toBe(true)
    } finally {
      c.disconnect()
      server.close()
    }
  })
})
