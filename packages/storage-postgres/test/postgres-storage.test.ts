import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { type Change, isSubstateError, type JsonValue, type SubjectStorage } from '@substate/core'
import { describeStorage } from '@substate/core/testing'
import { createPostgresStorage } from '@substate/storage-postgres'
import { databaseUrl, describeWith } from '@substate/test-support/services'
import pg from 'pg'
import { afterAll, beforeAll, expect, it } from 'vitest'

/** Every table of this run lives in its own schema, dropped at the end. */
const schema = `substate_test_${process.pid}_${Date.now().toString(36)}`
const inc = (name: string): Change => ({
  op: 'update',
  kind: 'prop',
  name,
  update: (n) => (typeof n === 'number' ? n : 0) + 1,
})
const set = (name: string, value: JsonValue): Change => ({
  op: 'set',
  kind: 'prop',
  name,
  value,
})

describeWith('postgres', 'storage-postgres', () => {
  let admin: pg.Pool
  let pool: pg.Pool
  const unreachable: pg.Pool[] = []
  const independent: pg.Pool[] = []
  const opened: SubjectStorage[] = []
  const storage = (
    table: string,
    options: { pool?: pg.Pool | pg.Client; maxAttempts?: number; timeout?: number } = {},
  ) => {
    const s = createPostgresStorage({ pool: options.pool ?? pool, schema, table, ...options })
    opened.push(s)
    return s
  }

  beforeAll(async () => {
    admin = new pg.Pool({ connectionString: databaseUrl, max: 2 })
    await admin.query(`CREATE SCHEMA "${schema}"`)
    pool = new pg.Pool({ connectionString: databaseUrl, max: 8 })
  })
  afterAll(async () => {
    for (const s of opened) await s.close()
    await pool?.end()
    await admin?.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
    await admin?.end()
  })

  describeStorage('postgres', {
    create: (ns) => createPostgresStorage({ pool, schema, table: ns }),
    createIndependent(ns) {
      const own = new pg.Pool({ connectionString: databaseUrl, max: 2 })
      independent.push(own)
      return createPostgresStorage({ pool: own, schema, table: ns })
    },
    createUnreachable() {
      const down = new pg.Pool({ host: '127.0.0.1', port: 1, user: 'postgres', database: 'test' })
      unreachable.push(down)
      return createPostgresStorage({ pool: down })
    },
    async corrupt(ns, subject) {
      // A row another tool wrote, whose properties column is not a JSON object.
      await admin.query(
        `INSERT INTO "${schema}"."${ns}" (subject_name, properties, ext_properties)
         VALUES ($1, '[1, 2]', '{}')`,
        [subject],
      )
    },
    async writeRaw(ns, subject, kind, name, text) {
      const column = kind === 'prop' ? 'properties' : 'ext_properties'
      await admin.query(
        `INSERT INTO "${schema}"."${ns}" AS r (subject_name, properties, ext_properties)
         VALUES ($1, '{}', '{}') ON CONFLICT (subject_name) DO NOTHING`,
        [subject],
      )
      await admin.query(
        `UPDATE "${schema}"."${ns}" SET ${column} = COALESCE(${column}, '{}') || jsonb_build_object($2::text, $3::jsonb) WHERE subject_name = $1`,
        [subject, name, text],
      )
    },
    async createOnConnection(ns, { maxAttempts }) {
      // One client: the writes sent on it run in order with the storage's statements.
      const client = new pg.Client({ connectionString: databaseUrl })
      await client.connect()
      const column = (kind: 'prop' | 'ext') => (kind === 'prop' ? 'properties' : 'ext_properties')
      return {
        storage: createPostgresStorage({ pool: client, schema, table: ns, maxAttempts }),
        interfere(subject, kind, name, text) {
          void client.query(
            `UPDATE "${schema}"."${ns}" SET ${column(kind)} = ${column(kind)} || jsonb_build_object($2::text, $3::jsonb) WHERE subject_name = $1`,
            [subject, name, text],
          )
        },
        async read(subject, kind, name) {
          const { rows } = await client.query(
            `SELECT (${column(kind)} -> $2)::text AS v FROM "${schema}"."${ns}" WHERE subject_name = $1`,
            [subject, name],
          )
          return rows[0]?.v ?? undefined
        },
        end: () => client.end(),
      }
    },
    async createSilent(port, timeout) {
      const p = new pg.Pool({ host: '127.0.0.1', port, user: 'postgres', database: 'test' })
      p.on('error', () => {})
      return { storage: createPostgresStorage({ pool: p, timeout }), end: () => p.end() }
    },
    async cleanup() {
      for (const p of unreachable) await p.end()
      for (const p of independent) await p.end()
    },
  })

  it('keeps the KRules table: subject_name, properties and ext_properties as jsonb, updated_at', async () => {
    const s = storage('layout')
    await s.commit('device:1', [
      set('cpu', 95),
      set('tags', ['a', 'b']),
      { op: 'set', kind: 'ext', name: 'owner', value: { id: 1 } },
      inc('count'),
    ])
    const columns = await pool.query(
      `SELECT column_name, data_type FROM information_schema.columns
       WHERE table_schema = $1 AND table_name = 'layout' ORDER BY ordinal_position`,
      [schema],
    )
    expect(columns.rows).toEqual([
      { column_name: 'subject_name', data_type: 'text' },
      { column_name: 'properties', data_type: 'jsonb' },
      { column_name: 'ext_properties', data_type: 'jsonb' },
      { column_name: 'updated_at', data_type: 'timestamp without time zone' },
    ])
    const { rows } = await pool.query(
      `SELECT subject_name, properties, ext_properties, updated_at FROM "${schema}".layout`,
    )
    expect(rows).toEqual([
      {
        subject_name: 'device:1',
        properties: { cpu: 95, tags: ['a', 'b'], count: 1 },
        ext_properties: { owner: { id: 1 } },
        updated_at: expect.any(Date),
      },
    ])
  })

  it('reads rows a Python KRules service wrote, and compares stored values exactly', async () => {
    const s = storage('py')
    await s.load('warm-up') // creates the table
    await pool.query(
      `INSERT INTO "${schema}".py (subject_name, properties, ext_properties)
       VALUES ('sensor:7', '{"temp": 21.5, "serial": 12345678901234567890}', '{"zone": "north"}')`,
    )
    const lossy = Number('12345678901234567890')
    // jsonb compares values, so only the number a double cannot hold keeps its stored text.
    expect(await s.load('sensor:7')).toEqual({
      props: { temp: 21.5, serial: lossy },
      ext: { zone: 'north' },
      raw: { prop: { serial: '12345678901234567890' } },
    })
    // A number JavaScript cannot hold exactly is still the stored value the updater replaces.
    const r = await s.commit('sensor:7', [
      { op: 'update', kind: 'prop', name: 'serial', update: (v) => String(v) },
    ])
    expect(r.changes[0]).toMatchObject({ oldValue: lossy, newValue: String(lossy) })
  })

  it('survives connections lost mid-query (pg_terminate_backend): those commits fail, later ones succeed', async () => {
    const script = fileURLToPath(new URL('./fixtures/lost-connection.mjs', import.meta.url))
    const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url))
    if (!existsSync(dist)) throw new Error(`${dist} is missing: run \`pnpm exec tsc -b\` first`)
    // A child process: an unhandled 'error' event there ends it, and fails this test.
    const { stdout } = await promisify(execFile)(process.execPath, [script], {
      env: { ...process.env, DATABASE_URL: databaseUrl, SCHEMA: schema },
      timeout: 60_000,
    })
    const result = JSON.parse(stdout.trim().split('\n').pop()!)
    expect(result.terminated).toBeGreaterThanOrEqual(2)
    expect(result.inflight).toEqual(['STORAGE', 'STORAGE'])
    expect(result.after).toBe(2)
    expect(result.unit).toBe('applied')
  }, 70_000)

  it('reads a NULL column as empty and rejects other non-object columns without writing', async () => {
    // KRules' own table, whose columns may be NULL.
    await pool.query(
      `CREATE TABLE "${schema}".shapes (subject_name text PRIMARY KEY, properties jsonb,
       ext_properties jsonb, updated_at timestamp)`,
    )
    const s = storage('shapes')
    await pool.query(
      `INSERT INTO "${schema}".shapes (subject_name, properties, ext_properties) VALUES
       ('null', NULL, '{"e": 1}'), ('string', '"json"', '{}'), ('array', '{}', '[1, 2]'),
       ('number', '42', NULL)`,
    )
    expect(await s.load('null')).toEqual({ props: {}, ext: { e: 1 } })
    await s.commit('null', [set('v', 1)])
    expect(await s.load('null')).toEqual({ props: { v: 1 }, ext: { e: 1 } })
    const rows = async () =>
      (
        await pool.query(
          `SELECT subject_name, properties::text AS p, ext_properties::text AS e
           FROM "${schema}".shapes WHERE subject_name <> 'null' ORDER BY 1`,
        )
      ).rows
    const before = await rows()
    const cases: Array<[string, string]> = [
      ['string', 'properties'],
      ['array', 'ext_properties'],
      ['number', 'properties'],
    ]
    for (const [subject, column] of cases) {
      const attempts: Array<[string, () => Promise<unknown>]> = [
        ['load', () => s.load(subject)],
        ['flush', () => s.flush(subject)],
        ['get', () => s.get(subject, column === 'properties' ? 'prop' : 'ext', 'x')],
        ['set', () => s.commit(subject, [set('v', 1)])],
        ['update', () => s.commit(subject, [inc('n')])],
        ['blind set', () => s.commit(subject, [set('v', 1)], { oldValues: false })],
        ['batch', () => s.commit(subject, [set('v', 1), { op: 'delete', kind: 'ext', name: 'z' }])],
        [
          'unit',
          () =>
            s.commitUnit!({
              entries: [{ subject, checks: [], writes: [{ kind: 'prop', name: 'v', value: '1' }] }],
            }),
        ],
      ]
      for (const [what, attempt] of attempts) {
        const err = await attempt().then(
          () => new Error(`${what} of ${subject} succeeded`),
          (e: unknown) => e,
        )
        expect(isSubstateError(err, 'STORAGE'), `${what} of ${subject}: ${String(err)}`).toBe(true)
        expect((err as Error).message, `${what} of ${subject}`).toContain(subject)
        if (what !== 'blind set')
          expect((err as Error).message, `${what} of ${subject}`).toContain(column)
      }
    }
    expect(await rows()).toEqual(before)
  })

  it('quotes table and schema names', async () => {
    const s = storage('odd "name"; drop')
    await s.commit('x', [set('v', 1)])
    expect(await s.get('x', 'prop', 'v')).toEqual({ value: 1 })
  })

  it('applies commits one at a time, exactly, when another process writes in between', async () => {
    // Awaited one by one, each commit is alone in its batch: the single-row statements.
    const other = new pg.Pool({ connectionString: databaseUrl, max: 1 })
    try {
      const a = storage('lone')
      const b = storage('lone', { pool: other })
      await a.commit('s', [set('n', 1), set('t', 'x')])
      for (let i = 2; i <= 5; i++) {
        expect((await a.commit('s', [inc('n')])).changes[0]).toMatchObject({
          oldValue: i - 1,
          newValue: i,
        })
      }
      // What `a` remembers of n is now stale: its next updater loses the race and runs again.
      await b.commit('s', [set('n', 100)])
      expect((await a.commit('s', [inc('n')])).changes).toEqual([
        { kind: 'prop', name: 'n', oldValue: 100, newValue: 101 },
      ])
      await b.commit('s', [set('n', 200)])
      const after = await a.commit('s', [inc('n'), set('t', { y: 1 })])
      expect(after.changes).toEqual([
        { kind: 'prop', name: 'n', oldValue: 200, newValue: 201 },
        { kind: 'prop', name: 't', oldValue: 'x', newValue: { y: 1 } },
      ])
      // One set whose old value is wanted, and a stored JSON null compared exactly.
      expect((await a.commit('s', [set('t', null)])).changes[0]).toMatchObject({
        oldValue: { y: 1 },
        newValue: null,
      })
      const bang: Change = { op: 'update', kind: 'prop', name: 't', update: (v) => `${String(v)}!` }
      expect((await a.commit('s', [bang])).changes[0]).toMatchObject({
        oldValue: null,
        newValue: 'null!',
      })
      await b.commit('s', [set('t', 'z')])
      const t = await a.commit('s', [bang])
      expect(t.changes[0]).toMatchObject({ oldValue: 'z', newValue: 'z!' })
      // With ext properties and deletes, the general single-row statement.
      const ext = await a.commit('s', [
        inc('n'),
        { op: 'delete', kind: 'prop', name: 't' },
        { op: 'set', kind: 'ext', name: 'e', value: 1 },
      ])
      expect(ext.changes.map((c) => [c.oldValue, c.newValue])).toEqual([
        [201, 202],
        ['z!', undefined],
        [undefined, 1],
      ])
      expect(await b.load('s')).toEqual({ props: { n: 202 }, ext: { e: 1 } })
    } finally {
      await other.end()
    }
  })

  it('creates the table once when several processes start at once', async () => {
    const pools = Array.from(
      { length: 6 },
      () => new pg.Pool({ connectionString: databaseUrl, max: 1 }),
    )
    try {
      const stores = pools.map((p) => storage('racing', { pool: p }))
      await Promise.all(stores.map((s, i) => s.commit(`s${i}`, [set('v', i)])))
      const names: string[] = []
      for await (const n of stores[0]!.subjects()) names.push(n)
      expect(names.sort()).toEqual(['s0', 's1', 's2', 's3', 's4', 's5'])
    } finally {
      for (const p of pools) await p.end()
    }
  })

  it('forgets idempotency keys older than idempotencyTtl', async () => {
    const s = createPostgresStorage({ pool, schema, table: 'prune', idempotencyTtl: 1 })
    opened.push(s)
    await s.commit('a', [inc('n')], { idempotencyKey: 'k1' })
    await new Promise((r) => setTimeout(r, 1_200))
    // A commit with a key more than a quarter of the TTL later prunes expired keys (in the
    // background), so k1 applies again.
    await s.commit('a', [inc('n')], { idempotencyKey: 'k2' })
    await expect
      .poll(async () => (await pool.query(`SELECT key FROM "${schema}".prune_applied`)).rows)
      .toEqual([{ key: 'k2' }])
    expect((await s.commit('a', [inc('n')], { idempotencyKey: 'k1' })).duplicate).toBeUndefined()
    expect(await s.get('a', 'prop', 'n')).toEqual({ value: 3 })
  })

  it('rejects only the commit holding a NUL character, which jsonb cannot store', async () => {
    const s = storage('nul')
    const [bad, good, literal] = await Promise.allSettled([
      s.commit('a', [set('v', 'x\u0000y')]),
      s.commit('b', [set('v', 'fine')]),
      s.commit('c', [set('v', 'backslash-u \\u0000 is text')]),
    ])
    expect(bad.status === 'rejected' && isSubstateError(bad.reason, 'STORAGE')).toBe(true)
    expect(good.status).toBe('fulfilled')
    expect(literal.status).toBe('fulfilled')
    expect(await s.get('c', 'prop', 'v')).toEqual({ value: 'backslash-u \\u0000 is text' })
  })

  it('lists many subjects page by page, by glob', async () => {
    const s = storage('many')
    await Promise.all(
      Array.from({ length: 1200 }, (_, i) =>
        s.commit(`item:${String(i).padStart(4, '0')}`, [set('v', i)]),
      ),
    )
    await s.commit('other:1', [set('v', 1)])
    const names: string[] = []
    for await (const n of s.subjects('item:*')) names.push(n)
    expect(names).toHaveLength(1200)
    expect(new Set(names).size).toBe(1200)
  })

  it('never sends a commit late: one that timed out waiting for a pool connection is dropped', async () => {
    const small = new pg.Pool({ connectionString: databaseUrl, max: 1 })
    const s = storage(`late_${Date.now().toString(36)}`, { pool: small, timeout: 300 })
    // The row exists, so a late single-row UPDATE would change it (on a missing row it would not).
    await s.commit('late:1', [set('v', 0)])
    const held = await small.connect() // the only connection is busy
    const err = await s.commit('late:1', [set('v', 1)]).catch((e: unknown) => e)
    expect(isSubstateError(err, 'STORAGE')).toBe(true)
    expect(isSubstateError((err as Error).cause, 'TIMEOUT')).toBe(true)
    held.release()
    await new Promise((r) => setTimeout(r, 300))
    expect(await s.get('late:1', 'prop', 'v')).toEqual({ value: 0 })
    await small.end()
  })
})
