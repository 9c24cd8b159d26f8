import { parseHttpMessage } from '@substate/cloudevents'
import type { Container, EventMap, IncomingEvent, ReceiveResult } from '@substate/core'
import { isSubstateError } from '@substate/core'
import type { Context } from 'hono'
import type { ReceiverStats } from './metrics.js'
import { readBody, TOO_LARGE } from './read-body.js'

/** One event's outcome in a batch response. */
interface BatchItem {
  readonly id: string
  readonly status: ReceiveResult['status'] | 'rejected'
  readonly error?: string
}

const DRAINING = 'the container is draining: no new events are accepted (retry on another instance)'

/**
 * The CloudEvents POST handler: body size limit, parse and validate, then one
 * `container.receive` per event (a unit of work: per-subject order, stored before it resolves).
 */
export function ingest<E extends EventMap>(
  container: Container<E>,
  stats: ReceiverStats,
  maxBodySize: number,
): (c: Context) => Promise<Response> {
  const reply = (c: Context, status: 202 | 400 | 413 | 415 | 500 | 503, body: object): Response => {
    stats.response(status)
    if (status === 503) c.header('retry-after', '1')
    return c.json(body, status)
  }

  const receive = async (event: IncomingEvent): Promise<ReceiveResult | 'rejected'> => {
    try {
      return await container.receive(event)
    } catch (e) {
      if (isSubstateError(e, 'SHUTDOWN')) return 'rejected'
      throw e
    }
  }

  return async (c) => {
    if (container.closed) return reply(c, 503, { error: DRAINING })
    stats.inflight++
    try {
      const body = await readBody(c, maxBodySize)
      if (body === TOO_LARGE) return reply(c, 413, tooLarge(maxBodySize))
      stats.bytes += body.bytes.byteLength
      const parsed = parseHttpMessage({ headers: body.headers, body: body.bytes })
      if (!parsed.ok) {
        stats.event('invalid')
        return reply(c, parsed.status, { error: parsed.error.message, field: parsed.error.field })
      }
      if (parsed.mode !== 'batch') {
        const r = await receive(parsed.events[0]!)
        if (r === 'rejected') {
          stats.event('rejected')
          return reply(c, 503, { error: DRAINING })
        }
        stats.event(r.status)
        if (r.status !== 'failed') return reply(c, 202, { status: r.status })
        // A failure while draining (handlers aborted at the drain timeout) is the instance's fault.
        return reply(c, container.closed ? 503 : 500, { error: r.error?.message ?? 'failed' })
      }
      // Batch: every event goes through receive on its own (ordered per subject, concurrent across
      // subjects); 202 only when all were handled or duplicates. Retrying the whole batch is safe:
      // the events already handled come back as duplicates.
      const results = await Promise.all(parsed.events.map(receive))
      let failed = false
      let rejected = false
      const items: BatchItem[] = results.map((r, i) => {
        const id = parsed.events[i]!.id
        if (r === 'rejected') {
          rejected = true
          stats.event('rejected')
          return { id, status: 'rejected', error: DRAINING }
        }
        stats.event(r.status)
        if (r.status !== 'failed') return { id, status: r.status }
        failed = true
        return { id, status: 'failed', error: r.error?.message ?? 'failed' }
      })
      const status = failed ? (container.closed ? 503 : 500) : rejected ? 503 : 202
      return reply(c, status, { results: items })
    } finally {
      stats.inflight--
    }
  }
}

const tooLarge = (max: number): object => ({
  error: `the request body is larger than ${max} bytes (maxBodySize)`,
  field: 'body',
})
