import { createServer, type Server, type Socket } from 'node:net'
import { isSubstateError } from '../errors.js'
import { expect, fresh, inc, it, type StorageSuite, set } from './describe-storage-kit.js'

/**
 * The connection a storage is handed: a writer that always wins, `close()` leaving the client
 * open, a server that accepts and never answers.
 */
export function describeOwnConnection({ factory }: StorageSuite): void {
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
}

/** A server that is down: every operation rejects with a StorageError, in bounded time. */
export function describeUnreachable({ factory }: StorageSuite): void {
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
}
