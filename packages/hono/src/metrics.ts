import type { MetricsSnapshot } from '@substate/core'

/** How a received event ended: the receiver's event counter label. */
export type EventOutcome = 'handled' | 'duplicate' | 'failed' | 'rejected' | 'invalid'

/** Counters of one receiver, exported on `/metrics` next to the container's handler metrics. */
export class ReceiverStats {
  readonly responses: Map<number, number> = new Map()
  readonly events: Map<EventOutcome, number> = new Map()
  bytes = 0
  inflight = 0

  response(status: number): void {
    this.responses.set(status, (this.responses.get(status) ?? 0) + 1)
  }
  event(outcome: EventOutcome, n = 1): void {
    this.events.set(outcome, (this.events.get(outcome) ?? 0) + n)
  }
}

// Prometheus text format 0.0.4: label values escape backslash, double quote and newline.
const label = (v: string): string =>
  v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')

function family(
  out: string[],
  name: string,
  type: 'counter' | 'gauge',
  help: string,
  samples: Iterable<[labels: string, value: number]>,
): void {
  out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`)
  for (const [labels, value] of samples) out.push(`${name}${labels} ${value}`)
}

/** Renders the container's handler metrics and the receiver's counters as Prometheus text. */
export function renderMetrics(snapshot: MetricsSnapshot, stats: ReceiverStats): string {
  const out: string[] = []
  const handlers = Object.entries(snapshot)
  const per = (pick: (m: MetricsSnapshot[string]) => number): Array<[string, number]> =>
    handlers.map(([name, m]) => [`{handler="${label(name)}"}`, pick(m)])
  family(
    out,
    'substate_handler_processed_total',
    'counter',
    'Handler runs that finished (succeeded, or failed after its last attempt).',
    per((m) => m.processed),
  )
  family(
    out,
    'substate_handler_failed_total',
    'counter',
    'Handler runs that failed after its last attempt.',
    per((m) => m.failed),
  )
  family(
    out,
    'substate_handler_retried_total',
    'counter',
    'Handler attempts that failed and were retried.',
    per((m) => m.retried),
  )
  family(
    out,
    'substate_handler_duration_avg_ms',
    'gauge',
    'Mean duration of a handler attempt, in milliseconds.',
    per((m) => m.avgMs),
  )
  family(
    out,
    'substate_handler_duration_p99_ms',
    'gauge',
    '99th percentile duration of the last 1,024 attempts, in milliseconds.',
    per((m) => m.p99Ms),
  )
  family(
    out,
    'substate_http_responses_total',
    'counter',
    'Responses of the CloudEvents receiver, by status code.',
    [...stats.responses].map(([status, n]) => [`{code="${status}"}`, n]),
  )
  family(
    out,
    'substate_http_events_total',
    'counter',
    'Events the receiver got, by outcome (handled, duplicate, failed, rejected while draining, invalid).',
    [...stats.events].map(([outcome, n]) => [`{outcome="${outcome}"}`, n]),
  )
  family(out, 'substate_http_received_bytes_total', 'counter', 'Request body bytes read.', [
    ['', stats.bytes],
  ])
  family(out, 'substate_http_inflight_requests', 'gauge', 'Receiver requests in progress.', [
    ['', stats.inflight],
  ])
  return `${out.join('\n')}\n`
}
