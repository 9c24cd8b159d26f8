import { type ContainerMetrics, family, labels, renderPrometheus } from '@substate/core'

/** How a received event ended: the receiver's event counter label. */
export type EventOutcome = 'handled' | 'duplicate' | 'failed' | 'rejected' | 'invalid'

/** Counters of one receiver, exported on `/metrics` next to the container's metrics. */
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

/**
 * The container's metrics (counters, and histograms in seconds as `_bucket`/`_sum`/`_count`) and
 * the receiver's counters, as Prometheus text format 0.0.4.
 */
export function renderMetrics(metrics: ContainerMetrics, stats: ReceiverStats): string {
  const out: string[] = []
  family(
    out,
    'substate_http_responses_total',
    'counter',
    'Responses of the CloudEvents receiver, by status code.',
    [...stats.responses].map(([status, n]) => [labels({ code: String(status) }), n] as const),
  )
  family(
    out,
    'substate_http_events_total',
    'counter',
    'Events the receiver got, by outcome (handled, duplicate, failed, rejected while draining, invalid).',
    [...stats.events].map(([outcome, n]) => [labels({ outcome }), n] as const),
  )
  family(out, 'substate_http_received_bytes_total', 'counter', 'Request body bytes read.', [
    ['', stats.bytes],
  ])
  family(out, 'substate_http_inflight_requests', 'gauge', 'Receiver requests in progress.', [
    ['', stats.inflight],
  ])
  return `${renderPrometheus(metrics)}${out.join('\n')}\n`
}
