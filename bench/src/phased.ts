/**
 * {@link compare} for work that needs an untimed preparation before each timed run: the
 * `store()` benchmarks (P4, P6) make 1,000 subjects dirty with cached `set`s, then time only the
 * `store()` calls. Rounds alternate as in `compare`; the ratio is the median per-round ratio.
 */
import { type Comparison, median } from './harness.js'

/** One side of a phased comparison. */
export interface Phased {
  /** Untimed: readies the next run. */
  prepare(): Promise<void> | void
  /** Timed: returns how many operations it performed. */
  run(): Promise<number>
}

/** Prepares and runs `side` repeatedly until about `ms` of timed runs; returns ops/second. */
async function phasedRate(side: Phased, ms: number): Promise<number> {
  let ops = 0
  let timed = 0
  while (timed < ms) {
    await side.prepare()
    const start = performance.now()
    ops += await side.run()
    timed += performance.now() - start
  }
  return (ops * 1000) / timed
}

export async function comparePhased(
  candidate: Phased,
  baseline: Phased,
  { rounds = 7, ms = 400 }: { rounds?: number; ms?: number } = {},
): Promise<Comparison> {
  await phasedRate(candidate, ms / 2)
  await phasedRate(baseline, ms / 2)
  const c: number[] = []
  const b: number[] = []
  const r: number[] = []
  for (let i = 0; i < rounds; i++) {
    const first = i % 2 === 0
    const rc = first ? await phasedRate(candidate, ms) : 0
    const rb = await phasedRate(baseline, ms)
    const rc2 = first ? rc : await phasedRate(candidate, ms)
    c.push(rc2)
    b.push(rb)
    r.push(rc2 / rb)
  }
  return { candidate: median(c), baseline: median(b), ratio: median(r) }
}
