/**
 * `pnpm bench [-- P1 P3 ...]`: runs the benchmarks (all, or those named) and prints, for each
 * figure, its details and then exactly one summary line `P<n> ratio=<x.xx> goal>=<g>`.
 */
import type { Benchmark, Figure } from './harness.js'
import { summary } from './harness.js'

// Each module registers its benchmarks here; loaded lazily so `-- P1` imports only P1's deps.
const modules: Record<string, () => Promise<{ benchmarks: Benchmark[] }>> = {
  P1: () => import('./p1-set.js'),
  P2: () => import('./p2-routing.js'),
  P3: () => import('./p3-redis-updater.js'),
  P4: () => import('./p4-redis-store.js'),
  P5: () => import('./p5-pg-updater.js'),
  P6: () => import('./p6-pg-store.js'),
  P7: () => import('./p7-http.js'),
  P8: () => import('./p8-pubsub.js'),
  P9: () => import('./p9-memory.js'),
  P10: () => import('./p10-units.js'),
}

const wanted = process.argv
  .slice(2)
  .filter((a) => a !== '--')
  .map((a) => a.toUpperCase())
const ids = Object.keys(modules).filter((id) => wanted.length === 0 || wanted.includes(id))
if (ids.length === 0) {
  console.error(
    `no benchmark named ${wanted.join(', ')}; known: ${Object.keys(modules).join(', ')}`,
  )
  process.exit(2)
}

const figures: Figure[] = []
for (const id of ids) {
  const { benchmarks } = await modules[id]!()
  for (const b of benchmarks) {
    console.log(`\n## ${b.id}: ${b.title}`)
    for (const f of await b.run()) {
      for (const line of f.details) console.log(`  ${line}`)
      console.log(summary(f))
      figures.push(f)
    }
  }
}
console.log(`\n# summary (node ${process.version}, ${new Date().toISOString()})`)
for (const f of figures) console.log(summary(f))
