/**
 * A writer process for `tests/storage-concurrency.test.ts`: one container on Redis or PostgreSQL
 * storage (default settings), incrementing one property of one subject `COUNT` times with
 * write-through updaters, all in flight at once. Says `{ ready }` over IPC, waits for `go` (so
 * that every worker writes at the same time), then reports `{ done, olds }` (the old value each
 * increment replaced).
 *
 * Environment: BACKEND (`redis` | `postgres`), URL, NAMESPACE (a Redis prefix or a table),
 * SCHEMA (PostgreSQL), SUBJECT, COUNT.
 * @module
 */
import { createContainer, type SubjectStorage } from '@substate/core'
import { createPostgresStorage } from '@substate/storage-postgres'
import { createRedisStorage } from '@substate/storage-redis'
import { Redis } from 'ioredis'
import pg from 'pg'

const env = (name: string): string => {
  const v = process.env[name]
  if (!v) throw new Error(`storage-worker: ${name} is not set`)
  return v
}

let storage: SubjectStorage
let release: () => Promise<unknown>
if (env('BACKEND') === 'redis') {
  const client = new Redis(env('URL'))
  storage = createRedisStorage({ client, prefix: env('NAMESPACE') })
  release = () => client.quit()
} else {
  const pool = new pg.Pool({ connectionString: env('URL'), max: 4 })
  storage = createPostgresStorage({
    pool,
    schema: env('SCHEMA'),
    table: env('NAMESPACE'),
  })
  release = () => pool.end()
}
const container = createContainer({ storage, source: `storage-worker-${process.pid}` })
const subject = container.subject(env('SUBJECT'))
const olds: number[] = []
container.on('subject-property-changed', (ctx) => {
  olds.push((ctx.oldValue as number | undefined) ?? 0)
})

process.once('message', (message) => {
  if (message !== 'go') return
  void (async () => {
    try {
      const count = Number(env('COUNT'))
      await Promise.all(
        Array.from({ length: count }, () => subject.set('n', (n = 0) => n + 1, { cache: false })),
      )
      await container.close()
      await release()
      process.send?.({ done: true, olds }, () => process.exit(0))
    } catch (e) {
      process.send?.({ error: String(e) }, () => process.exit(1))
    }
  })()
})
process.send?.({ ready: true })
