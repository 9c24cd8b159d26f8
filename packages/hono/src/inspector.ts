import type { Container, DeadLetter, SubstateEvent } from '@substate/core'
import { type Context, Hono } from 'hono'
import { type SSEStreamingApi, streamSSE } from 'hono/streaming'
import { glob } from './events-stream.js'
import { deadLettersApi } from './inspector-dead-letters.js'
import { INSPECTOR_CSS, INSPECTOR_JS, inspectorHtml } from './inspector-page.js'
import {
  type CascadeSummary,
  type DispatchRecord,
  DispatchRecorder,
  describeError,
} from './inspector-recorder.js'

/** Options of {@link createInspector}. */
export interface InspectorOptions {
  /**
   * The public path the page is served at (what the browser sees), for its links to its script,
   * styles and API. Set it when a proxy rewrites the path.
   * @default the path of the request for the page
   */
  readonly basePath?: string
  /**
   * Lists subject names matching a glob, for the Subjects view: pass the storage's own,
   * `storage.subjects.bind(storage)`. Without it the view lists the subjects seen in recent
   * events only.
   * @default undefined (subjects seen in events)
   */
  readonly subjects?: (pattern?: string) => AsyncIterable<string>
  /**
   * Lists dead letters for the Dead letters view, in place of the container's own sink: for a
   * sink that cannot list its entries, or to show others.
   * @default the container's dead-letter sink (`createContainer({ deadLetter })`) when it can
   * list its entries (`createMemoryDeadLetters`, `storageDeadLetters`); else none
   */
  readonly deadLetters?: () => Promise<readonly DeadLetter[]> | readonly DeadLetter[]
  /**
   * Dispatches recorded for the cascade view (a ring: older ones are dropped). Recording is a
   * middleware on every dispatch (it costs throughput while the inspector is mounted); `0` turns
   * it off, and the cascade view then lists what `container.eventLog` holds, without timings,
   * nesting or failures.
   * @default 5_000
   */
  readonly cascades?: number
  /**
   * Most events a live stream sends a client per `streamInterval`: the latest ones; the earlier
   * ones of that interval are counted and reported as skipped, so a busy container never floods
   * the page.
   * @default 50
   */
  readonly streamBatch?: number
  /**
   * Milliseconds between two batches of a live stream (events, a subject's state).
   * @default 100
   */
  readonly streamInterval?: number
  /**
   * Most subject names one listing returns.
   * @default 500
   */
  readonly maxSubjects?: number
  /**
   * Milliseconds between keep-alive comments on an idle live stream.
   * @default 15_000
   */
  readonly heartbeat?: number
}

/** An event as the inspector's API shows it: the payload as (clipped) JSON text. */
export interface InspectedEvent {
  readonly id: string
  readonly type: string
  readonly subject: string
  readonly source: string
  readonly time: number
  readonly originId: string
  readonly propertyName?: string
  readonly payload: string
}

const PAYLOAD_CHARS = 2_000
const SUBJECT_EVENTS = 20

/**
 * A read-only web page to look inside a running container, as a Hono app to mount behind the
 * app's own authentication: `app.route('/inspector', createInspector(container, options))`.
 * Everything is served by the package (no build step, no CDN; the page is vanilla JS with a
 * strict Content-Security-Policy and builds its DOM as text, so subject names and payloads never
 * run as markup). Views:
 *
 * - **Subjects**: names matching a glob (through `subjects`, else the ones seen in events), new
 *   ones appearing live; a subject's properties and ext properties, re-read after each of its
 *   events (ext changes show with the next event of the subject).
 * - **Events**: the live stream filtered by type and subject globs, the latest `streamBatch` events
 *   per `streamInterval` per page, with a count of the ones skipped.
 * - **Cascades**: all events of one origin id as a tree, with each dispatch's duration and the
 *   failures of its handlers (attempts, dead-lettered). The inspector records them from the
 *   moment it is created, with a middleware (registered last, so the innermost: the duration
 *   covers handlers and the events they caused, not outer middleware) and an `onError` hook.
 * - **Metrics** (`container.metrics.snapshot()`) and **Dead letters**: the entries of the
 *   container's dead-letter sink when it can list them (or what `deadLetters` returns), newest
 *   first, filtered by handler, type and subject.
 *
 * The JSON API under `api/` is what the page reads: `GET api/subjects?pattern=`,
 * `GET api/subject?name=`, `GET api/subject/stream?name=` (SSE `state`), `GET
 * api/events?type=&subject=` (SSE `batch`: `{ events, skipped }`; both streams first send
 * `ready` once subscribed), `GET api/cascades`,
 * `GET api/cascade?origin=`, `GET api/metrics`, `GET api/dead-letters?handler=&type=&subject=`.
 *
 * @example
 * import { createMemoryStorage } from '@substate/core'
 *
 * const storage = createMemoryStorage()
 * const container = createContainer({ storage })
 * const app = createReceiver(container)
 * app.use('/inspector/*', basicAuth({ username: 'ops', password: process.env.INSPECTOR_PASSWORD }))
 * app.route('/inspector', createInspector(container, { subjects: storage.subjects.bind(storage) }))
 */
export function createInspector(
  container: Container,
  {
    basePath,
    subjects,
    deadLetters,
    cascades = 5_000,
    streamBatch = 50,
    streamInterval = 100,
    maxSubjects = 500,
    heartbeat = 15_000,
  }: InspectorOptions = {},
): Hono {
  for (const [name, value] of Object.entries({
    streamBatch,
    streamInterval,
    maxSubjects,
    heartbeat,
  })) {
    if (!(Number.isInteger(value) && value > 0))
      throw new TypeError(`${name} must be a positive integer, got ${value}`)
  }
  if (!(Number.isInteger(cascades) && cascades >= 0))
    throw new TypeError(`cascades must be an integer >= 0, got ${cascades}`)
  // Recording costs a middleware on every dispatch; `cascades: 0` leaves the hot path alone.
  const recorder = cascades > 0 ? new DispatchRecorder(container, cascades) : undefined
  // A future `container.subjects(pattern)` takes over from the option when present.
  const list =
    subjects ??
    (container as { subjects?: (pattern?: string) => AsyncIterable<string> }).subjects?.bind(
      container,
    )
  const pump = { interval: streamInterval, heartbeat }

  const app = new Hono()
  app.onError((err, c) => c.json({ error: describeError(err) }, 500))
  app.use('*', async (c, next) => {
    await next()
    c.header('X-Content-Type-Options', 'nosniff')
    c.header('Referrer-Policy', 'no-referrer')
    c.header('Cache-Control', 'no-store')
  })

  const page = (c: Context): Response => {
    let base = basePath ?? c.req.path
    if (!base.endsWith('/')) base += '/'
    c.header(
      'Content-Security-Policy',
      "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    )
    return c.html(inspectorHtml(base)) as Response
  }
  app.get('/', page)
  app.get('/inspector.js', (c) =>
    c.body(INSPECTOR_JS, 200, { 'content-type': 'text/javascript; charset=utf-8' }),
  )
  app.get('/inspector.css', (c) =>
    c.body(INSPECTOR_CSS, 200, { 'content-type': 'text/css; charset=utf-8' }),
  )

  app.get('/api/subjects', async (c) => {
    const pattern = c.req.query('pattern') || '**'
    const match = glob(pattern, 'pattern') ?? (() => true)
    if (match instanceof Response) return match
    const names: string[] = []
    let truncated = false
    if (list !== undefined) {
      for await (const name of list(pattern)) {
        if (names.length === maxSubjects) {
          truncated = true
          break
        }
        names.push(name)
      }
    } else {
      const seen = new Set<string>()
      for (const e of container.eventLog.recent()) if (match(e.subject)) seen.add(e.subject)
      for (const s of recorder?.origins(Number.MAX_SAFE_INTEGER) ?? [])
        if (match(s.subject)) seen.add(s.subject)
      for (const name of seen) {
        if (names.length === maxSubjects) {
          truncated = true
          break
        }
        names.push(name)
      }
    }
    names.sort()
    return c.json({ pattern, source: list === undefined ? 'events' : 'storage', names, truncated })
  })

  app.get('/api/subject', async (c) => {
    const name = c.req.query('name')
    if (!name) return c.json({ error: 'a subject name is needed: ?name=', field: 'name' }, 400)
    return c.json({
      ...(await readSubject(container, name)),
      events: subjectEvents(container, name),
    })
  })

  app.get('/api/subject/stream', (c) => {
    const name = c.req.query('name')
    if (!name) return c.json({ error: 'a subject name is needed: ?name=', field: 'name' }, 400)
    if (container.closed) return c.json({ error: 'the container is draining' }, 503)
    return streamSSE(c, async (stream) => {
      let fresh: SubstateEvent[] = []
      let dirty = true
      let initial = true
      await live(
        stream,
        pump,
        (ended) => {
          const sub = container.events$.subscribe({
            next(e) {
              if (e.subject !== name) return
              dirty = true
              if (fresh.length < SUBJECT_EVENTS) fresh.push(e)
            },
            complete: ended,
            error: ended,
          })
          return () => sub.unsubscribe()
        },
        async () => {
          if (!dirty) return false
          dirty = false
          const events = initial ? subjectEvents(container, name) : fresh.map(inspected)
          initial = false
          fresh = []
          const state = await readSubject(container, name)
          await stream.writeSSE({ event: 'state', data: JSON.stringify({ ...state, events }) })
          return true
        },
      )
    })
  })

  app.get('/api/events', (c) => {
    const type = glob(c.req.query('type'), 'type')
    const subject = glob(c.req.query('subject'), 'subject')
    if (type instanceof Response) return type
    if (subject instanceof Response) return subject
    if (container.closed) return c.json({ error: 'the container is draining' }, 503)
    return streamSSE(c, async (stream) => {
      let batch: SubstateEvent[] = []
      let skipped = 0
      await live(
        stream,
        pump,
        (ended) => {
          const sub = container.events$.subscribe({
            next(e) {
              if ((type && !type(e.type)) || (subject && !subject(e.subject))) return
              // The latest events win: a live view shows what happens now, and counts the rest.
              batch.push(e)
              if (batch.length > streamBatch) {
                batch.shift()
                skipped++
              }
            },
            complete: ended,
            error: ended,
          })
          return () => sub.unsubscribe()
        },
        async () => {
          if (batch.length === 0 && skipped === 0) return false
          const data = JSON.stringify({ events: batch.map(inspected), skipped })
          batch = []
          skipped = 0
          await stream.writeSSE({ event: 'batch', data })
          return true
        },
      )
    })
  })

  app.get('/api/cascades', (c) => {
    const limit = Math.min(Number(c.req.query('limit')) || 100, 1_000)
    return c.json({ cascades: recorder?.origins(limit) ?? logOrigins(container, limit) })
  })

  app.get('/api/cascade', (c) => {
    const origin = c.req.query('origin')
    if (!origin) return c.json({ error: 'an origin id is needed: ?origin=', field: 'origin' }, 400)
    const records = recorder?.cascade(origin) ?? []
    const seen = new Set(records.map((r) => r.event.id))
    const events = records.map(dispatched)
    // Events of the cascade the recorder did not see (dispatched before the inspector existed,
    // or dropped from its ring) but the container's event log still holds: no timing, no parent.
    for (const e of container.eventLog.recent(undefined, { originId: origin }).reverse()) {
      if (seen.has(e.id)) continue
      events.push({
        ...inspected(e),
        parentId: null,
        startedAt: e.time,
        durationMs: null,
        failures: [],
      })
    }
    return c.json({ originId: origin, events })
  })

  app.get('/api/metrics', (c) => c.json({ handlers: container.metrics.snapshot() }))

  app.get('/api/dead-letters', deadLettersApi(container, deadLetters, inspected))

  // Mounted with app.route('/inspector', ...), '/' is '/inspector': serve '/inspector/' too.
  app.get('/*', (c, next) => (c.req.path.endsWith('/') ? page(c) : next()))
  return app
}

/** Without a recorder: the cascades of the container's event log, newest first, untimed. */
function logOrigins(container: Container, limit: number): CascadeSummary[] {
  const byOrigin = new Map<string, { first: SubstateEvent; events: number }>()
  for (const e of container.eventLog.recent()) {
    const s = byOrigin.get(e.originId)
    if (s === undefined) byOrigin.set(e.originId, { first: e, events: 1 })
    else {
      s.first = e
      s.events++
    }
  }
  return [...byOrigin].slice(0, limit).map(([originId, { first, events }]) => ({
    originId,
    type: first.type,
    subject: first.subject,
    startedAt: first.time,
    events,
    failures: 0,
  }))
}

async function readSubject(
  container: Container,
  name: string,
): Promise<{ name: string; props: Record<string, unknown>; ext: Record<string, unknown> }> {
  const subject = container.subject(name)
  await subject.refresh() // reads through: what any replica stored
  return subject.toJSON()
}

/** The latest events of exactly this subject (a name may contain glob characters). */
function subjectEvents(container: Container, name: string): InspectedEvent[] {
  const out: InspectedEvent[] = []
  for (const e of container.eventLog.recent()) {
    if (e.subject !== name) continue
    out.push(inspected(e))
    if (out.length === SUBJECT_EVENTS) break
  }
  return out.reverse()
}

function inspected(e: SubstateEvent): InspectedEvent {
  let payload: string
  try {
    payload = JSON.stringify(e.payload) ?? ''
  } catch {
    payload = String(e.payload)
  }
  if (payload.length > PAYLOAD_CHARS) payload = `${payload.slice(0, PAYLOAD_CHARS)}…`
  return {
    id: e.id,
    type: e.type,
    subject: e.subject,
    source: e.source,
    time: e.time,
    originId: e.originId,
    ...(e.propertyName === undefined ? {} : { propertyName: e.propertyName }),
    payload,
  }
}

function dispatched(r: DispatchRecord): InspectedEvent & {
  parentId: string | null
  startedAt: number
  durationMs: number | null
  failures: DispatchRecord['failures']
} {
  return {
    ...inspected(r.event),
    parentId: r.parentId ?? null,
    startedAt: r.startedAt,
    durationMs: r.durationMs ?? null,
    failures: r.failures,
  }
}

/**
 * Runs a live stream until the client goes away or the container closes: `subscribe` starts the
 * source (then a `ready` message goes out), `flush` sends what gathered (resolving `true` when it wrote) every `interval` ms, a
 * keep-alive comment goes out after `heartbeat` ms of silence. Awaiting each write paces a slow
 * client: what arrives meanwhile is batched or skipped by `flush`'s owner, never queued unbounded.
 */
async function live(
  stream: SSEStreamingApi,
  { interval, heartbeat }: { interval: number; heartbeat: number },
  subscribe: (ended: () => void) => () => void,
  flush: () => Promise<boolean>,
): Promise<void> {
  let ended = false
  let wake: (() => void) | undefined
  const end = (): void => {
    ended = true
    wake?.()
  }
  stream.onAbort(end)
  const unsubscribe = subscribe(end)
  let quiet = 0
  try {
    // Tells the client the stream is subscribed: what happens from now on will be sent.
    await stream.writeSSE({ event: 'ready', data: '{}' })
    while (!ended) {
      quiet = (await flush()) ? 0 : quiet + interval
      if (quiet >= heartbeat) {
        quiet = 0
        await stream.write(': keep-alive\n\n')
      }
      if (ended) break
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, interval)
        timer.unref?.()
        wake = () => {
          clearTimeout(timer)
          resolve()
        }
      })
      wake = undefined
    }
  } catch {
    // The client went away mid-write: nothing to do but stop.
  } finally {
    unsubscribe()
  }
}
