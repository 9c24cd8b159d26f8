/**
 * P9: heap bytes per idle cached subject with 10 properties (vs a plain Map of Maps holding the
 * same values), and the identity map's bound with 1,000,000 distinct subjects touched.
 * Needs `node --expose-gc` (the `pnpm bench` script passes it).
 */
import { createContainer, createMemoryStorage, type Subject } from '@substate/core'
import { type Benchmark, fmt } from './harness.js'

const N = 20_000
/** Keeps measured objects reachable until both heap readings are taken. */
export const retained: unknown[] = []
const gc = (): void => {
  const g = (globalThis as { gc?: () => void }).gc
  if (!g) throw new Error('P9 needs node --expose-gc')
  for (let i = 0; i < 3; i++) g()
}
const heap = (): number => {
  gc()
  return process.memoryUsage().heapUsed
}
const props = (i: number): Record<string, string | number | boolean> => ({
  name: `device ${i}`,
  cpu: i % 100,
  memory: (i * 7) % 100,
  error_rate: i % 13,
  health: 'healthy',
  online: true,
  firmware: '1.2.3',
  site: `site-${i % 50}`,
  rack: i % 40,
  updated: 1_700_000_000 + i,
})

async function substateBytes(): Promise<number> {
  const storage = createMemoryStorage()
  const container = createContainer({ storage, maxSubjects: N * 2 })
  // Subjects are written by another container, then loaded (cached) and idle in this one.
  const writer = createContainer({ storage })
  for (let i = 0; i < N; i++) {
    const s = writer.subject(`device:${i}`)
    for (const [k, v] of Object.entries(props(i))) await s.set(k, v, { muted: true })
    await s.store()
  }
  // (not closed: closing a container closes its storage, which `container` still uses)
  const keep: Subject[] = []
  const before = heap()
  for (let i = 0; i < N; i++) {
    const s = container.subject(`device:${i}`)
    await s.keys()
    keep.push(s)
  }
  retained.push(keep, container)
  const after = heap()
  retained.length = 0
  return (after - before) / N
}

function naiveBytes(): number {
  const keep: Map<string, unknown>[] = []
  const byName = new Map<string, Map<string, unknown>>()
  const before = heap()
  for (let i = 0; i < N; i++) {
    const m = new Map(Object.entries(props(i)))
    byName.set(`device:${i}`, m)
    keep.push(m)
  }
  retained.push(keep, byName)
  const after = heap()
  retained.length = 0
  return (after - before) / N
}

async function bound(): Promise<{ touched: number; maxLive: number; bound: number }> {
  const BOUND = 10_000
  const container = createContainer({ maxSubjects: BOUND })
  const live = (): number => (container as unknown as { liveSubjects: number }).liveSubjects
  let maxLive = 0
  const TOUCHED = 1_000_000
  for (let i = 0; i < TOUCHED; i++) {
    const s = container.subject(`s:${i}`)
    if (i % 10 === 0) await s.set('v', i, { cache: false, muted: true })
    else await s.get('v', { default: null })
    if (i % 1000 === 0) maxLive = Math.max(maxLive, live())
  }
  maxLive = Math.max(maxLive, live())
  await container.close()
  return { touched: TOUCHED, maxLive, bound: BOUND }
}

export const benchmarks: Benchmark[] = [
  {
    id: 'P9',
    title: 'heap per idle cached subject (10 properties); identity map bound with 1M subjects',
    async run() {
      const naive = naiveBytes()
      const ours = await substateBytes()
      const b = await bound()
      return [
        {
          id: 'P9',
          goal: 0.5,
          ratio: naive / ours,
          details: [
            `substate ${fmt(ours)} bytes per idle cached subject (10 properties)`,
            `Map-of-Maps baseline ${fmt(naive)} bytes per subject (ratio = baseline / substate)`,
            `identity map: ${fmt(b.touched)} distinct subjects touched, at most ${fmt(b.maxLive)} live (bound ${fmt(b.bound)}): ${b.maxLive <= b.bound + 1 ? 'within bound' : 'BOUND EXCEEDED'}`,
          ],
        },
      ]
    },
  },
]
