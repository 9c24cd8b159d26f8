/**
 * `pnpm start`: the device-health service over HTTP on 127.0.0.1 (PORT, default 8080), on the
 * in-memory default — or Redis when REDIS_URL is set, PostgreSQL when DATABASE_URL is set. At
 * start it feeds a short simulated metric stream through its own HTTP receiver as binary-mode
 * CloudEvents, printing each reaction (SIMULATE=0 skips it); then it serves until Ctrl-C.
 */
import type { SubjectStorage } from '@substate/core'
import { startDeviceHealth } from './service.js'
import { METRIC_STREAM } from './simulate.js'

async function chooseStorage(): Promise<{
  storage?: SubjectStorage
  label: string
  close(): Promise<void>
}> {
  if (process.env.REDIS_URL) {
    const { Redis } = await import('ioredis')
    const { createRedisStorage } = await import('@substate/storage-redis')
    const client = new Redis(process.env.REDIS_URL)
    // ioredis reconnects on its own; log each new connection error once instead of its
    // "Unhandled error event" lines (storage calls fail with a StorageError meanwhile).
    let last = ''
    client.on('error', (e: Error) => {
      if (e.message !== last) console.error(`redis: ${e.message} (reconnecting)`)
      last = e.message
    })
    client.on('ready', () => {
      last = ''
    })
    const storage = createRedisStorage({ client, prefix: 'device-health:' })
    return {
      storage,
      label: `Redis at ${process.env.REDIS_URL}`,
      close: async () => void client.disconnect(),
    }
  }
  if (process.env.DATABASE_URL) {
    const { default: pg } = await import('pg')
    const { createPostgresStorage } = await import('@substate/storage-postgres')
    const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL })
    // An idle pooled connection that PostgreSQL drops (a restart, a failover) is reported here;
    // without a listener Node treats it as an unhandled 'error' and exits. The pool replaces it.
    pool.on('error', (e: Error) => console.error(`postgres: idle connection lost: ${e.message}`))
    const storage = createPostgresStorage({ pool })
    return { storage, label: `PostgreSQL at ${process.env.DATABASE_URL}`, close: () => pool.end() }
  }
  return { label: 'in-memory storage', close: async () => {} }
}

const chosen = await chooseStorage()
const service = await startDeviceHealth({
  port: Number(process.env.PORT ?? 8080),
  ...(chosen.storage ? { storage: chosen.storage } : {}),
  log: (line) => console.log(`  ${line}`),
})
console.log(`device-health serving on ${service.url} (${chosen.label})`)

if (process.env.SIMULATE !== '0') {
  console.log('\nsimulated metric stream, as binary-mode CloudEvents:')
  let seq = 0
  const run = Date.now().toString(36)
  for (const [device, metrics] of METRIC_STREAM) {
    console.log(`→ POST ${device} ${JSON.stringify(metrics)}`)
    const res = await fetch(`${service.url}/`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'ce-specversion': '1.0',
        'ce-id': `sim-${run}-${++seq}`,
        'ce-source': 'simulator',
        'ce-type': 'device.metrics',
        'ce-subject': device,
      },
      body: JSON.stringify(metrics),
    })
    if (res.status !== 202) console.log(`  ${res.status} ${await res.text()}`)
  }
  const state = await (await fetch(`${service.url}/subjects/device:prod-01`)).json()
  console.log(`\nGET /subjects/device:prod-01 → ${JSON.stringify(state)}`)
}

const readyz = await fetch(`${service.url}/readyz`)
if (readyz.status !== 200)
  console.error(`not ready yet: /readyz answers ${readyz.status} ${await readyz.text()}`)
console.log(`\nready: POST CloudEvents to ${service.url}/ (see the README); Ctrl-C stops`)
const stop = async (): Promise<void> => {
  console.log('\ndraining...')
  const report = await service.close()
  console.log(
    `drained: ${report.drained} in flight, ${report.stored} subjects stored` +
      `${report.timedOut ? ', timed out (in-flight work was aborted)' : ''}` +
      `${report.errors.length > 0 ? `, ${report.errors.length} errors: ${report.errors.map((e) => (e as Error)?.message ?? String(e)).join('; ')}` : ''}`,
  )
  await chosen.close()
  process.exit(report.errors.length === 0 ? 0 : 1)
}
process.once('SIGINT', () => void stop())
process.once('SIGTERM', () => void stop())
