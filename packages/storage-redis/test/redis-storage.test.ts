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
    async corrupt(ns, subject) {
      writer ??= new Redis(redisUrl!)
      await writer.set(`s:${run}${ns}:${subject}`, 'not a hash')
    },
    async writeRaw(ns, subject, kind, name, text) {
      writer ??= new Redis(redisUrl!)
      await writer.hset(`s:${run}${ns}:${subject}`, (kind === 'prop' ? 'p' : 'e') + name, text)
    },
    async createOnConnection(ns, { maxAttempts }) {
      const own = new Redis(redisUrl!)
      const key = (subject: string) => `s:${run}${ns}:${subject}`
      const field = (kind: 'prop' | 'ext', name: string) => (kind === 'prop' ? 'p' : 'e') + name
      return {
        storage: createRedisStorage({ client: own, prefix: `${run}${ns}:`, maxAttempts }),
        interfere(subject, kind, name, text) {
          void own.hset(key(subject), field(kind, name), text)
        },
        read: async (subject, kind, name) =>
          (await own.hget(key(subject), field(kind, name))) ?? undefined,
        end: async () => {
          await own.quit()
        },
      }
    },
    async createSilent(port, timeout) {
      const c = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: null })
      return {
        storage: createRedisStorage({ client: c, timeout }),
        end: async () => c.disconnect(),
      }
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
    await raw.hset(key, 'phuge', '[1e400]')
    const s = storage('nan')
    const snap = await s.load('sensor:8')
    expect(snap.props).toEqual({ ok: 1 })
    expect(snap.ext).toEqual({ big: Number('123456789012345678901') })
    expect(snap.raw).toEqual({
      prop: { temp: 'NaN', huge: '[1e400]' },
      ext: { big: '123456789012345678901' },
    })
    expect(Object.keys(snap.invalid?.prop ?? {}).sort()).toEqual(['huge', 'temp'])
    for (const name of ['temp', 'huge']) {
      const err = await s.get('sensor:8', 'prop', name).catch((e: unknown) => e)
      expect(isSubstateError(err, 'STORAGE'), name).toBe(true)
    }
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

  it('refuses a unit touching a key that is not a hash, writing none of it, alone in its batch', async () => {
    const s = storage('wrongtype')
    await raw.set(`s:${run}wrongtype:b`, 'a string')
    const write = (subject: string) => ({
      subject,
      checks: [],
      writes: [{ kind: 'prop' as const, name: 'v', value: '1' }],
    })
    const [bad, good] = await Promise.allSettled([
      s.commitUnit!({ entries: [write('a'), write('b')] }),
      s.commitUnit!({ entries: [write('c')] }),
    ])
    expect(bad.status).toBe('rejected')
    expect(isSubstateError((bad as PromiseRejectedResult).reason, 'STORAGE')).toBe(true)
    expect(good).toEqual({ status: 'fulfilled', value: { status: 'applied' } })
    expect(await raw.exists(`s:${run}wrongtype:a`)).toBe(0)
    expect(await raw.get(`s:${run}wrongtype:b`)).toBe('a string')
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
})
