/**
 * The metrics of a container: a small registry of its own (no dependency), recorded on the hot
 * path with a few array increments and no allocation, and rendered as Prometheus text. Durations
 * are histograms in seconds with Prometheus' default buckets, so replicas can be summed.
 */

/** Prometheus' default histogram buckets (upper bounds, seconds). */
export const DEFAULT_BUCKETS: readonly number[] = Object.freeze([
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
])

/** A histogram's state: cumulative counts per upper bound (`+Inf` last), sum and count. */
export interface HistogramSnapshot {
  /** Upper bounds in seconds; the last bucket (`+Inf`) is `count`. */
  readonly buckets: readonly number[]
  /** Cumulative counts: `counts[i]` observations were `<= buckets[i]`. */
  readonly counts: readonly number[]
  /** Sum of the observations, seconds. */
  readonly sum: number
  readonly count: number
}

/** A histogram of durations in seconds. `observe` only increments (no allocation). */
export class Histogram {
  readonly #bounds: readonly number[]
  /** Per bucket (not cumulative), the last one `+Inf`. */
  readonly #counts: Float64Array
  sum = 0
  count = 0

  constructor(bounds: readonly number[] = DEFAULT_BUCKETS) {
    this.#bounds = bounds
    this.#counts = new Float64Array(bounds.length + 1)
  }

  observe(seconds: number): void {
    const b = this.#bounds
    let i = 0
    while (i < b.length && seconds > b[i]!) i++
    this.#counts[i]!++
    this.sum += seconds
    this.count++
  }

  snapshot(): HistogramSnapshot {
    const counts: number[] = []
    let c = 0
    for (let i = 0; i < this.#bounds.length; i++) {
      c += this.#counts[i]!
      counts.push(c)
    }
    return { buckets: this.#bounds, counts, sum: this.sum, count: this.count }
  }
}

/** Counters and latencies of one handler. */
export interface HandlerMetrics {
  readonly processed: number
  readonly failed: number
  readonly retried: number
  /** Mean duration of an attempt, ms. */
  readonly avgMs: number
  /** 99th percentile of the last 1,024 attempts, ms. */
  readonly p99Ms: number
  /** Every attempt's duration, seconds. */
  readonly duration: HistogramSnapshot
}

/** `container.metrics.snapshot()`: per handler name. */
export type MetricsSnapshot = Record<string, HandlerMetrics>

/** `container.metrics.collect()`: the handlers and the container's own counters. */
export interface ContainerMetrics {
  readonly handlers: MetricsSnapshot
  /** Events dispatched (emitted, received, property changes), each once. */
  readonly events: number
  /** Failures of events (a handler's last attempt, middleware, a route). */
  readonly failures: number
  /** Handler attempts that failed and were tried again. */
  readonly retries: number
  /** Events put in the dead-letter sink. */
  readonly deadLetters: number
  /** Units of work run again because what they read changed before they committed. */
  readonly conflicts: number
  /** Outbound messages waiting in the outboxes this container relays. */
  readonly outboxBacklog: number
  /** A unit of work, from its first run to its commit (re-runs included), seconds. */
  readonly unitDuration: HistogramSnapshot
  /** A unit's storage commit, seconds. */
  readonly commitDuration: HistogramSnapshot
  /** An outbound send (a route or target delivery), seconds. */
  readonly sendDuration: HistogramSnapshot
}

const WINDOW = 1024

/** Accumulates one handler's numbers; a ring of recent durations gives the p99. Internal. */
export class HandlerStats {
  processed = 0
  failed = 0
  retried = 0
  #total = 0
  #count = 0
  readonly #ring = new Float64Array(WINDOW)
  readonly duration: Histogram = new Histogram()

  /** The handler's label in metrics (its name, suffixed when another handler had it first). */
  constructor(readonly name: string) {}

  #time(ms: number): void {
    this.#ring[this.#count % WINDOW] = ms
    this.#count++
    this.#total += ms
    this.duration.observe(ms / 1000)
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
      duration: this.duration.snapshot(),
    }
  }
}

/**
 * The metrics of a container. Handlers are labelled by name; a handler registered under a name
 * another handler already had is labelled `name#2`, then `name#3`, in registration order (labels
 * are never reused, so a series never mixes two handlers).
 */
export class Metrics {
  readonly #byName = new Map<string, HandlerStats>()
  events = 0
  failures = 0
  deadLetters = 0
  conflicts = 0
  readonly units: Histogram = new Histogram()
  readonly commits: Histogram = new Histogram()
  readonly sends: Histogram = new Histogram()

  /** The stats of a handler being registered under `name`. */
  of(name: string): HandlerStats {
    let label = name
    for (let n = 2; this.#byName.has(label); n++) label = `${name}#${n}`
    const s = new HandlerStats(label)
    this.#byName.set(label, s)
    return s
  }

  snapshot(): MetricsSnapshot {
    return Object.fromEntries([...this.#byName].map(([k, v]) => [k, v.snapshot()]))
  }

  collect(outboxBacklog: number): ContainerMetrics {
    let retries = 0
    for (const s of this.#byName.values()) retries += s.retried
    return {
      handlers: this.snapshot(),
      events: this.events,
      failures: this.failures,
      retries,
      deadLetters: this.deadLetters,
      conflicts: this.conflicts,
      outboxBacklog,
      unitDuration: this.units.snapshot(),
      commitDuration: this.commits.snapshot(),
      sendDuration: this.sends.snapshot(),
    }
  }
}

// Prometheus text format 0.0.4: label values escape backslash, double quote and newline.
const escapeLabel = (v: string): string =>
  v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')

/** A Prometheus label set, `{a="b"}` or empty. */
export function labels(pairs: Readonly<Record<string, string>>): string {
  const parts = Object.entries(pairs).map(([k, v]) => `${k}="${escapeLabel(v)}"`)
  return parts.length === 0 ? '' : `{${parts.join(',')}}`
}

/** Appends one metric family (HELP, TYPE, samples) in Prometheus text format. */
export function family(
  out: string[],
  name: string,
  type: 'counter' | 'gauge',
  help: string,
  samples: Iterable<readonly [labels: string, value: number]>,
): void {
  out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`)
  for (const [l, value] of samples) out.push(`${name}${l} ${value}`)
}

/** Appends a histogram family: `_bucket` (cumulative, with `le`), `_sum`, `_count`. */
export function histogramFamily(
  out: string[],
  name: string,
  help: string,
  series: Iterable<readonly [labels: Readonly<Record<string, string>>, h: HistogramSnapshot]>,
): void {
  out.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`)
  for (const [pairs, h] of series) {
    for (let i = 0; i < h.buckets.length; i++)
      out.push(`${name}_bucket${labels({ ...pairs, le: String(h.buckets[i]) })} ${h.counts[i]}`)
    out.push(`${name}_bucket${labels({ ...pairs, le: '+Inf' })} ${h.count}`)
    out.push(`${name}_sum${labels(pairs)} ${h.sum}`)
    out.push(`${name}_count${labels(pairs)} ${h.count}`)
  }
}

/**
 * A container's metrics as Prometheus text (format 0.0.4), every family prefixed `substate_`.
 * Concatenate it with another registry's output (prom-client's `register.metrics()`) to serve both.
 */
export function renderPrometheus(m: ContainerMetrics): string {
  const out: string[] = []
  const handlers = Object.entries(m.handlers)
  const per = (pick: (h: HandlerMetrics) => number) =>
    handlers.map(([name, h]) => [labels({ handler: name }), pick(h)] as const)
  family(out, 'substate_events_total', 'counter', 'Events dispatched.', [['', m.events]])
  family(
    out,
    'substate_handler_processed_total',
    'counter',
    'Handler runs that finished (succeeded, or failed after its last attempt).',
    per((h) => h.processed),
  )
  family(
    out,
    'substate_handler_failed_total',
    'counter',
    'Handler runs that failed after their last attempt.',
    per((h) => h.failed),
  )
  family(
    out,
    'substate_handler_retried_total',
    'counter',
    'Handler attempts that failed and were tried again.',
    per((h) => h.retried),
  )
  histogramFamily(
    out,
    'substate_handler_duration_seconds',
    'Duration of a handler attempt.',
    handlers.map(([name, h]) => [{ handler: name }, h.duration] as const),
  )
  family(out, 'substate_failures_total', 'counter', 'Failures of events.', [['', m.failures]])
  family(out, 'substate_retries_total', 'counter', 'Handler attempts tried again.', [
    ['', m.retries],
  ])
  family(out, 'substate_dead_letters_total', 'counter', 'Events put in the dead-letter sink.', [
    ['', m.deadLetters],
  ])
  family(
    out,
    'substate_unit_conflicts_total',
    'counter',
    'Units of work run again because what they read changed before they committed.',
    [['', m.conflicts]],
  )
  family(
    out,
    'substate_outbox_backlog',
    'gauge',
    'Outbound messages waiting in the outboxes this container relays.',
    [['', m.outboxBacklog]],
  )
  histogramFamily(
    out,
    'substate_unit_duration_seconds',
    'Duration of a unit of work, re-runs included.',
    [[{}, m.unitDuration]],
  )
  histogramFamily(out, 'substate_commit_duration_seconds', "Duration of a unit's storage commit.", [
    [{}, m.commitDuration],
  ])
  histogramFamily(out, 'substate_send_duration_seconds', 'Duration of an outbound send.', [
    [{}, m.sendDuration],
  ])
  return `${out.join('\n')}\n`
}
