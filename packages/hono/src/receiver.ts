import { randomUUID } from 'node:crypto'
import type { Container, EventMap, Logger } from '@substate/core'
import { Hono } from 'hono'
import { eventsStream } from './events-stream.js'
import { ingest } from './ingest.js'
import { ReceiverStats, renderMetrics } from './metrics.js'

/** Options of {@link createReceiver}. */
export interface ReceiverOptions {
  /**
   * Path of the CloudEvents endpoint (POST).
   * @default '/'
   */
  readonly path?: string
  /**
   * Largest request body accepted, in bytes: a larger `Content-Length`, or a body that streams
   * past it, is answered 413.
   * @default 1_048_576 (1 MiB)
   */
  readonly maxBodySize?: number
  /**
   * Most events one batch request may carry; a larger batch is answered 413 (`field: 'body'`)
   * unhandled. A batch is started a slice of events per turn of the event loop, so other
   * requests are served while it runs.
   * @default 1_000
   */
  readonly maxBatchSize?: number
  /**
   * Longest `id` and `source` accepted, in UTF-8 bytes; longer is answered 400 naming the field.
   * Both are kept in the duplicate window, which must not grow by megabytes per event.
   * @default 1_024
   */
  readonly maxIdLength?: number
  /**
   * Readiness checks run by `GET /readyz` besides the drain state: each returns (or resolves to)
   * `true` when that dependency can serve, e.g. `{ pubsub: () => subscriber.ready() }` or a
   * storage ping. A check that returns `false`, throws or takes longer than `readinessTimeout`
   * makes `/readyz` answer 503 `{ status: 'not ready', checks: { name: false, ... } }`.
   */
  readonly readiness?: Readonly<Record<string, () => boolean | Promise<boolean>>>
  /**
   * Milliseconds a readiness check may take.
   * @default 2_000
   */
  readonly readinessTimeout?: number
  /**
   * Receives internal failures (500 answers, failed events) with the error id that was sent to the
   * client, so that a response can be matched to its log line. Response bodies carry only a short
   * message and the id, never the internal error text.
   * @default logs through `logger`, else with console.error
   */
  readonly onError?: (error: unknown, errorId: string, what: string) => void
  /**
   * A pino-style logger (`error`, `warn`, `info`, `debug`, each `(fields, message?)`): internal
   * failures are logged as `error` with `{ err, errorId }` (unless `onError` is given).
   */
  readonly logger?: Logger
  /**
   * Milliseconds between keep-alive comments on `GET /events` streams.
   * @default 15_000
   */
  readonly heartbeat?: number
  /**
   * Events a `GET /events` client may fall behind before it is disconnected.
   * @default 1_000
   */
  readonly maxBacklog?: number
  /**
   * Answers the CloudEvents webhook validation handshake (abuse protection): an `OPTIONS` request
   * to `path` with a `WebHook-Request-Origin` header is granted (200, `WebHook-Allowed-Origin`,
   * `WebHook-Allowed-Rate`) when the origin is listed, refused (403) otherwise. Senders such as
   * Azure Event Grid require it before they deliver. Without this option `OPTIONS` is answered
   * 405, which tells a sender the handshake is not supported.
   */
  readonly webhook?: WebhookOptions
}

/** Who may deliver to the receiver, for the webhook validation handshake. */
export interface WebhookOptions {
  /** Origins (DNS names, e.g. `eventgrid.azure.net`) allowed to deliver, or `'*'` for any. */
  readonly origins: readonly string[] | '*'
  /**
   * Requests per minute granted to an allowed origin (`WebHook-Allowed-Rate`); unlimited (`*`)
   * when omitted.
   */
  readonly rate?: number
}

/**
 * A Hono app that receives CloudEvents into a container and exposes it over HTTP.
 *
 * - `POST /` (binary, structured and batch modes): each event is validated and handled by
 *   `container.receive` in a unit of work: events for one subject one at a time in arrival order,
 *   different subjects concurrently, every subject touched stored before the answer.
 *   **202** handled and stored (or a duplicate `source`+`id`, acknowledged without handling it
 *   again); **400** invalid event, JSON `{ error, field }`; **413** body over `maxBodySize`;
 *   **415** not a CloudEvents content type; **500** a handler failed and the event was not
 *   durably dead-lettered, or storing failed (nothing it cached was stored: redeliver it): the
 *   body is `{ error, errorId }`, a short message and an id that `onError` logs with the cause;
 *   **503** the container is draining. Limits: `maxBodySize` (413), `maxBatchSize` events per
 *   batch (413), `maxIdLength` bytes of `id`/`source` (400), JSON `data` nested at most 256 deep
 *   and valid UTF-8 (400, `field: 'data'`). A batch is answered 202 only when every event was handled or a duplicate,
 *   otherwise 500 (or 503) with `{ results: [{ id, status, error? }] }`; resending the whole
 *   batch is safe.
 * - `OPTIONS /`: the CloudEvents webhook validation handshake, when `webhook` is set (405 otherwise).
 * - `GET /subjects/:name`: `{ name, props, ext }` as stored now (read through, so any replica
 *   answers what the others stored), 404 when the subject has no properties.
 * - `GET /events?type=<glob>&subject=<glob>`: matching events as Server-Sent Events.
 * - `GET /healthz` (200 while the process serves), `GET /readyz` (503 once draining or while a
 *   `readiness` check fails),
 *   `GET /metrics` (Prometheus text: handler metrics and receiver counters).
 *
 * Mount it under a prefix or behind middleware with `app.route('/substate', createReceiver(c))`;
 * `/subjects` and `/events` expose state, so put authentication in front when it is not private.
 *
 * @example
 * import { serve } from '@hono/node-server'
 *
 * const app = createReceiver(container)
 * const server = serve({ fetch: app.fetch, port: 8080, hostname: '127.0.0.1' })
 * process.once('SIGTERM', async () => {
 *   await container.close() // /readyz turns 503, in-flight events finish and are stored
 *   server.close()
 * })
 */
export function createReceiver<E extends EventMap>(
  container: Container<E>,
  {
    path = '/',
    maxBodySize = 1_048_576,
    maxBatchSize = 1_000,
    maxIdLength = 1_024,
    readiness = {},
    readinessTimeout = 2_000,
    logger,
    onError = logger === undefined
      ? (error, errorId, what) => console.error(`[hono] error ${errorId}: ${what}:`, error)
      : (err, errorId, what) => logger.error({ err, errorId }, what),
    heartbeat = 15_000,
    maxBacklog = 1_000,
    webhook,
  }: ReceiverOptions = {},
): Hono {
  const allowed = webhook === undefined ? undefined : originFilter(webhook)
  const stats = new ReceiverStats()
  const app = new Hono()
  const report = (error: unknown, what: string): string => {
    const errorId = randomUUID()
    try {
      onError(error, errorId, what)
    } catch (hookError) {
      if (logger === undefined) console.error('[hono] the onError hook threw:', hookError)
      else logger.error({ err: hookError, errorId }, 'the onError hook threw')
    }
    return errorId
  }
  app.onError((err, c) => {
    stats.response(500)
    const error = 'internal error'
    return c.json({ error, errorId: report(err, `${c.req.method} ${c.req.path}: ${error}`) }, 500)
  })
  app.post(path, ingest(container, stats, { maxBodySize, maxBatchSize, maxIdLength }, report))
  app.options(path, (c) => {
    c.header('Allow', 'POST, OPTIONS')
    if (allowed === undefined) return c.json({ error: 'the webhook handshake is not enabled' }, 405)
    const origin = c.req.header('WebHook-Request-Origin')?.trim()
    if (!origin) {
      return c.json(
        {
          error: 'a webhook validation request needs a WebHook-Request-Origin header',
          field: 'WebHook-Request-Origin',
        },
        400,
      )
    }
    // Consent is the two headers alone: a refusal carries neither.
    if (!allowed(origin)) return c.json({ error: `origin ${origin} may not deliver here` }, 403)
    c.header('WebHook-Allowed-Origin', origin)
    c.header('WebHook-Allowed-Rate', webhook?.rate === undefined ? '*' : String(webhook.rate))
    return c.body(null, 200)
  })
  app.get('/subjects/:name{.+}', async (c) => {
    if (container.closed) return c.json({ error: 'the container is draining' }, 503)
    const subject = container.subject(c.req.param('name'))
    await subject.refresh() // reads through: what any replica stored
    const state = subject.toJSON()
    if (Object.keys(state.props).length === 0 && Object.keys(state.ext).length === 0)
      return c.json({ error: `no subject ${state.name}`, field: 'name' }, 404)
    return c.json(state)
  })
  app.get('/events', eventsStream(container, heartbeat, maxBacklog))
  app.get('/healthz', (c) => c.json({ status: 'ok' }))
  const checks = Object.entries(readiness)
  const check = async (fn: () => boolean | Promise<boolean>): Promise<boolean> => {
    let timer: NodeJS.Timeout | undefined
    try {
      return (
        (await Promise.race([
          fn(),
          new Promise<false>((resolve) => {
            timer = setTimeout(() => resolve(false), readinessTimeout)
          }),
        ])) === true
      )
    } catch {
      return false
    } finally {
      clearTimeout(timer)
    }
  }
  app.get('/readyz', async (c) => {
    if (container.closed) return c.json({ status: 'draining' }, 503)
    if (checks.length === 0) return c.json({ status: 'ready' })
    const results = await Promise.all(checks.map(([, fn]) => check(fn)))
    const body = Object.fromEntries(checks.map(([name], i) => [name, results[i]!]))
    return results.every(Boolean)
      ? c.json({ status: 'ready', checks: body })
      : c.json({ status: 'not ready', checks: body }, 503)
  })
  app.get('/metrics', async (c) =>
    c.text(renderMetrics(await container.metrics.collect(), stats), 200, {
      'content-type': 'text/plain; version=0.0.4; charset=utf-8',
    }),
  )
  return app
}

function originFilter({ origins, rate }: WebhookOptions): (origin: string) => boolean {
  if (rate !== undefined && !(Number.isInteger(rate) && rate > 0))
    throw new TypeError(
      `webhook.rate must be a positive integer (requests per minute), got ${rate}`,
    )
  if (origins === '*') return () => true
  if (!Array.isArray(origins))
    throw new TypeError("webhook.origins must be a list of origins (DNS names) or '*'")
  // DNS names are case-insensitive.
  const set = new Set(origins.map((o) => o.toLowerCase()))
  return (origin) => set.has(origin.toLowerCase())
}
