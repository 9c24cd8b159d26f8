/** Counters and latencies of one handler. */
export interface HandlerMetrics {
  readonly processed: number
  readonly failed: number
  readonly retried: number
  /** Mean duration of an attempt, ms. */
  readonly avgMs: number
  /** 99th percentile of the last 1,024 attempts, ms. */
  readonly p99Ms: number
}

/** `container.metrics.snapshot()`: per handler name. */
export type MetricsSnapshot = Record<string, HandlerMetrics>

const WINDOW = 1024

/** Accumulates one handler's numbers; a ring of recent durations gives the p99. Internal. */
export class HandlerStats {
  processed = 0
  failed = 0
  retried = 0
  #total = 0
  #count = 0
  readonly #ring = new Float64Array(WINDOW)

  #time(ms: number): void {
    this.#ring[this.#count % WINDOW] = ms
    this.#count++
    this.#total += ms
  }
  ok(ms: number): void {
    this.processed++
    this.#time(ms)
  }
  fail(ms: number): void {
    this.processed++
    this.failed++
    this.#time(ms)
  }
  retry(ms: number): void {
    this.retried++
    this.#time(ms)
  }
  snapshot(): HandlerMetrics {
    const n = Math.min(this.#count, WINDOW)
    const sorted = this.#ring.slice(0, n).sort()
    return {
      processed: this.processed,
      failed: this.failed,
      retried: this.retried,
      avgMs: this.#count === 0 ? 0 : this.#total / this.#count,
      p99Ms: n === 0 ? 0 : sorted[Math.min(n - 1, Math.floor(n * 0.99))]!,
    }
  }
}

/** Per-handler statistics of a container. */
export class Metrics {
  readonly #byName = new Map<string, HandlerStats>()
  of(name: string): HandlerStats {
    let s = this.#byName.get(name)
    if (s === undefined) {
      s = new HandlerStats()
      this.#byName.set(name, s)
    }
    return s
  }
  snapshot(): MetricsSnapshot {
    return Object.fromEntries([...this.#byName].map(([k, v]) => [k, v.snapshot()]))
  }
}
