/**
 * `pnpm start`: the device-health service on the in-memory default. Feeds a short simulated
 * metric stream through the same unit-of-work path an HTTP CloudEvent takes, printing each
 * reaction, then the stored state.
 */
import { createContainer, createMemoryStorage } from '@substate/core'
import { deviceHealthRules } from './rules.js'
import { METRIC_STREAM } from './simulate.js'

const storage = createMemoryStorage()
const container = createContainer({ storage, source: 'device-health' })
deviceHealthRules(container, (line) => console.log(`  ${line}`))

let seq = 0
for (const [device, metrics] of METRIC_STREAM) {
  console.log(`→ ${device} ${JSON.stringify(metrics)}`)
  const result = await container.receive({
    id: `sim-${++seq}`,
    source: 'simulator',
    type: 'device.metrics',
    subject: device,
    payload: metrics,
  })
  if (result.status !== 'handled') console.log(`  ${result.status}: ${result.error?.message}`)
}

console.log('\nstored state:')
for await (const name of storage.subjects('device:*')) {
  console.log(`  ${name} ${JSON.stringify((await storage.load(name)).props)}`)
}
await container.close()
