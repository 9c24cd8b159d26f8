/**
 * P2: routing cost with 1,000 registered patterns vs 10. The type's matching handlers are memoized
 * on first sight, so once a type was seen the number of patterns should not matter.
 */
import { createContainer } from '@substate/core'
import { type Benchmark, compare, fmt } from './harness.js'

function emitter(patterns: number): () => Promise<number> {
  const container = createContainer()
  const { on, emit } = container.handlers()
  for (let i = 0; i < patterns; i++) on(i % 2 ? `svc${i}.*.created` : `svc${i}.{a,b}.*`, () => {})
  let hits = 0
  on('order.*', () => {
    hits++
  })
  const subject = container.subject('order:1')
  return async () => {
    for (let i = 0; i < 1000; i++) await emit('order.created', subject)
    return 1000 + hits * 0
  }
}

export const benchmarks: Benchmark[] = [
  {
    id: 'P2',
    title: 'emit routing with 1,000 registered patterns vs 10',
    async run() {
      const r = await compare(emitter(1000), emitter(10))
      return [
        {
          id: 'P2',
          goal: 0.9,
          ratio: r.ratio,
          details: [
            `1,000 patterns ${fmt(r.candidate)} emits/s`,
            `10 patterns ${fmt(r.baseline)} emits/s`,
          ],
        },
      ]
    },
  },
]
