/**
 * Benchmark harness. Each figure compares Substate against a baseline measured in the same run,
 * alternating rounds of the two so that a noisy neighbour slows both alike; the reported ratio is
 * the median of the per-round ratios (candidate rate / baseline rate, higher is better).
 */

export interface Figure {
  /** `P1`, `P2`, ... */
  readonly id: string
  /** The goal the ratio is compared against (`goal>=`). */
  readonly goal: number
  readonly ratio: number
  /** Free-form detail lines printed before the summary. */
  readonly details: readonly string[]
}

export interface Benchmark {
  readonly id: string
  readonly title: string
  run(): Promise<Figure[]>
}

/** Runs `fn` (which performs `ops` operations) repeatedly for about `ms`; returns ops/second. */
export async function rate(fn: () => Promise<number> | number, ms = 400): Promise<number> {
  let ops = 0
  const start = performance.now()
  let now = start
  while (now - start < ms) {
    ops += await fn()
    now = performance.now()
  }
  return (ops * 1000) / (now - start)
}

export interface Comparison {
  readonly candidate: number
  readonly baseline: number
  readonly ratio: number
}

/**
 * Alternates `rounds` rounds of candidate and baseline (after one warm-up round each) and returns
 * the median rates and the median of the per-round ratios.
 */
export async function compare(
  candidate: () => Promise<number> | number,
  baseline: () => Promise<number> | number,
  { rounds = 7, ms = 400 }: { rounds?: number; ms?: number } = {},
): Promise<Comparison> {
  await rate(candidate, ms / 2)
  await rate(baseline, ms / 2)
  const c: number[] = []
  const b: number[] = []
  const r: number[] = []
  for (let i = 0; i < rounds; i++) {
    // Swap the order every round so neither side always runs on a warmer machine.
    const first = i % 2 === 0
    const rc = first ? await rate(candidate, ms) : 0
    const rb = await rate(baseline, ms)
    const rc2 = first ? rc : await rate(candidate, ms)
    c.push(rc2)
    b.push(rb)
    r.push(rc2 / rb)
  }
  return { candidate: median(c), baseline: median(b), ratio: median(r) }
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

export const fmt = (n: number): string =>
  n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(2)

/** The one summary line scripts read: `P1 ratio=0.42 goal>=0.35`. */
export const summary = (f: Figure): string => `${f.id} ratio=${f.ratio.toFixed(2)} goal>=${f.goal}`
