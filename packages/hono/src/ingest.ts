import { parseHttpMessage } from '@substate/cloudevents'
import type {
  Container,
  EventMap,
  IncomingEvent,
  ReceiveResult,
  ValidationError,
} from '@substate/core'
import { isSubstateError } from '@substate/core'
import type { Context } from 'hono'
import type { ReceiverStats } from './metrics.js'
import { type Body, readBody, TOO_LARGE } from './read-body.js'

/** One event's outcome in a batch response. */
interface BatchItem {
  readonly id: string
  readonly status: ReceiveResult['status'] | 'rejected' | 'invalid'
  readonly error?: string
  readonly field?: string
  readonly errorId?: string
}

/** Limits of the receiver on what one request may carry (see `ReceiverOptions`). */
export interface IngestLimits {
  readonly maxBodySize: number
  readonly maxBatchSize: number
  readonly maxIdLength: number
}

/**
 * Reports an internal failure under a new error id and returns the id: the id goes in the
 * response body, the error (with its cause, stack, internal text) only to the log.
 */
export type ReportError = (error: unknown, what: string) => string

/** Events handled per turn of the event loop in a batch: other requests are served between. */
const BATCH_SLICE = 64

const DRAINING = 'the container is draining: no new events are accepted (retry on another instance)'

/**
 * The CloudEvents POST handler: body size limit, parse and validate, then one
 * `container.receive` per event (a unit of work: per-subject order, stored before it resolves).
 */
export function ingest<E extends EventMap>(
  container: Container<E>,
  stats: ReceiverStats,
  { maxBodySize, maxBatchSize, maxIdLength }: IngestLimits,
  report: ReportError,
): (c: Context) => Promise<Response> {
  const reply = (c: Context, status: 202 | 400 | 413 | 415 | 500 | 503, body: object): Response => {
    stats.response(status)
    if (status === 503) c.header('retry-after', '1')
    return c.json(body, status)
  }

  // The answers of the hot path, serialized once.
  const answered = {
    handled: JSON.stringify({ status: 'handled' }),
    duplicate: JSON.stringify({ status: 'duplicate' }),
  }
  const accepted = (c: Context, status: 'handled' | 'duplicate'): Response => {
    stats.response(202)
    return c.body(answered[status], 202, JSON_TYPE)
  }
  // What `container.receive` ended with, sorted out once for single events and batches.
  const received = (e: unknown): 'rejected' | ValidationError => {
    if (isSubstateError(e, 'SHUTDOWN')) return 'rejected'
    // A payload its schema rejects (createContainer({ schemas })): the sender's fault, 400.
    if (isSubstateError(e, 'VALIDATION')) return e as ValidationError
    throw e
  }
  const receive = (event: IncomingEvent): Promise<ReceiveResult | 'rejected' | ValidationError> => {
    try {
      return container.receive(event).then(undefined, received)
    } catch (e) {
      return new Promise((resolve) => resolve(received(e)))
    }
  }
  // A short message and an error id for the body; the failure itself only to the log.
  const failure = (r: ReceiveResult, id: string): { error: string; errorId: string } => {
    const storage = isSubstateError(r.error, 'STORAGE')
    const error = storage
      ? 'the event could not be stored: redeliver it'
      : 'a handler failed and the event was not dead-lettered: redeliver it'
    return { error, errorId: report(r.error ?? new Error('failed'), `event ${id}: ${error}`) }
  }
  // Ids and sources are kept in the dedup window: bound them.
  const tooLong = (events: readonly IncomingEvent[], batch: boolean): object | undefined => {
    for (let i = 0; i < events.length; i++) {
      const e = events[i]!
      for (const field of ['id', 'source'] as const) {
        const value = e[field]
        if (value.length > maxIdLength / 3 && Buffer.byteLength(value) > maxIdLength)
          return {
            error: `the event's ${field} is longer than ${maxIdLength} bytes (maxIdLength)`,
            field: batch ? `[${i}].${field}` : field,
          }
      }
    }
    return undefined
  }

  /** The answer to one event (binary or structured mode). */
  const single = (c: Context, event: IncomingEvent): Promise<Response> => {
    const answer = (r: ReceiveResult | 'rejected' | ValidationError): Response => {
      if (r === 'rejected') {
        stats.event('rejected')
        return reply(c, 503, { error: DRAINING })
      }
      if (r instanceof Error) {
        stats.event('invalid')
        return reply(c, 400, { error: r.message, field: r.field })
      }
      stats.event(r.status)
      if (r.status !== 'failed') return accepted(c, r.status)
      // A failure while draining (handlers aborted at the drain timeout) is the instance's fault.
      return reply(c, container.closed ? 503 : 500, failure(r, event.id))
    }
    return receive(event).then(answer)
  }

  /**
   * A batch: every event goes through receive on its own (ordered per subject, concurrent across
   * subjects); 202 only when all were handled or duplicates. Retrying the whole batch is safe: the
   * events already handled come back as duplicates.
   */
  const batch = async (c: Context, events: readonly IncomingEvent[]): Promise<Response> => {
    // Started a slice per turn of the event loop, so that a large batch does not hold the
    // process while other requests wait.
    const pending: Array<Promise<ReceiveResult | 'rejected' | ValidationError>> = []
    for (let i = 0; i < events.length; i++) {
      if (i > 0 && i % BATCH_SLICE === 0) await new Promise((r) => setImmediate(r))
      const p = receive(events[i]!)
      p.catch(() => {}) // awaited below; not unhandled meanwhile
      pending.push(p)
    }
    const results = await Promise.all(pending)
    let failed = false
    let rejected = false
    let invalid = false
    const items: BatchItem[] = results.map((r, i) => {
      const id = events[i]!.id
      if (r === 'rejected') {
        rejected = true
        stats.event('rejected')
        return { id, status: 'rejected', error: DRAINING }
      }
      if (r instanceof Error) {
        invalid = true
        stats.event('invalid')
        return { id, status: 'invalid', error: r.message, field: `[${i}].${r.field}` }
      }
      stats.event(r.status)
      if (r.status !== 'failed') return { id, status: r.status }
      failed = true
      return { id, status: 'failed', ...failure(r, id) }
    })
    // Failures and drains are retried by the sender; an invalid event only when no other is.
    const status = failed ? (container.closed ? 503 : 500) : rejected ? 503 : invalid ? 400 : 202
    return reply(c, status, { results: items })
  }

  /** A request whose body was read: parsed, validated and received. */
  const handle = (c: Context, body: Body | typeof TOO_LARGE): Response | Promise<Response> => {
    if (body === TOO_LARGE) return reply(c, 413, tooLarge(maxBodySize))
    stats.bytes += body.bytes.byteLength
    const parsed = parseHttpMessage({ headers: body.headers, body: body.bytes })
    if (!parsed.ok) {
      stats.event('invalid')
      return reply(c, parsed.status, { error: parsed.error.message, field: parsed.error.field })
    }
    if (parsed.events.length > maxBatchSize) {
      stats.event('invalid')
      return reply(c, 413, {
        error: `a batch holds at most ${maxBatchSize} events, this one ${parsed.events.length} (maxBatchSize): split it`,
        field: 'body',
      })
    }
    const long = tooLong(parsed.events, parsed.mode === 'batch')
    if (long !== undefined) {
      stats.event('invalid')
      return reply(c, 400, long)
    }
    return parsed.mode === 'batch' ? batch(c, parsed.events) : single(c, parsed.events[0]!)
  }

  // Callbacks rather than async functions: each promise costs (AsyncLocalStorage hooks are on),
  // and a single event is the hot path.
  return (c) => {
    if (container.closed) return Promise.resolve(reply(c, 503, { error: DRAINING }))
    stats.inflight++
    const ended = (response: Response): Response => {
      stats.inflight--
      return response
    }
    const failed = (e: unknown): never => {
      stats.inflight--
      throw e
    }
    let read: Promise<Body | typeof TOO_LARGE>
    try {
      read = readBody(c, maxBodySize)
    } catch (e) {
      read = Promise.reject(e)
    }
    return read.then((body) => handle(c, body)).then(ended, failed)
  }
}

const JSON_TYPE = { 'Content-Type': 'application/json' } as const

const tooLarge = (max: number): object => ({
  error: `the request body is larger than ${max} bytes (maxBodySize)`,
  field: 'body',
})
