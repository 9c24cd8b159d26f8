import type { Container, EventMap } from '@substate/core'
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
 *   durably dead-lettered (nothing it cached was stored: redeliver it); **503** the container
 *   is draining. A batch is answered 202 only when every event was handled or a duplicate,
 *   otherwise 500 (or 503) with `{ results: [{ id, status, error? }] }`; resending the whole
 *   batch is safe.
 * - `OPTIONS /`: the CloudEvents webhook validation handshake, when `webhook` is set (405 otherwise).
 * - `GET /subjects/:name`: `{ name, props, ext }`, 404 when the subject has no properties.
 * - `GET /events?type=<glob>&subject=<glob>`: matching events as Server-Sent Events.
 * - `GET /healthz` (200 while the process serves), `GET /readyz` (503 once draining),
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
    heartbeat = 15_000,
    maxBacklog = 1_000,
    webhook,
  }: ReceiverOptions = {},
): Hono {
  const allowed = webhook === undefined ? undefined : originFilter(webhook)
  const stats = new ReceiverStats()
  const app = new Hono()
  app.onError((err, c) => {
    stats.response(500)
    return c.json({ error: err.message }, 500)
  })
  app.post(path, ingest(container, stats, maxBodySize))
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
    await subject.keys() // loads it
    const state = subject.toJSON()
    if (Object.keys(state.props).length === 0 && Object.keys(state.ext).length === 0)
      return c.json({ error: `no subject ${state.name}`, field: 'name' }, 404)
    return c.json(state)
  })
  app.get('/events', eventsStream(container, heartbeat, maxBacklog))
  app.get('/healthz', (c) => c.json({ status: 'ok' }))
  app.get('/readyz', (c) =>
    container.closed ? c.json({ status: 'draining' }, 503) : c.json({ status: 'ready' }),
  )
  app.get('/metrics', (c) =>
    c.text(renderMetrics(container.metrics.snapshot(), stats), 200, {
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
