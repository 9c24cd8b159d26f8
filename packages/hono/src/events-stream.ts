import { toCloudEvent } from '@substate/cloudevents'
import type { Container, EventMap, GlobMatcher } from '@substate/core'
import { compileGlob } from '@substate/core'
import type { Context } from 'hono'
import { streamSSE } from 'hono/streaming'

type Subscription = ReturnType<Container['events$']['subscribe']>

/** A glob from a query parameter: undefined when absent, a 400 response naming it when invalid. */
export function glob(
  pattern: string | undefined,
  field: string,
): GlobMatcher | Response | undefined {
  if (pattern === undefined || pattern === '') return undefined
  try {
    return compileGlob(pattern)
  } catch (e) {
    return Response.json(
      { error: `invalid glob in ?${field}=: ${(e as Error).message}`, field },
      { status: 400 },
    )
  }
}

/**
 * `GET /events?type=<glob>&subject=<glob>`: every dispatched event whose type and subject match,
 * as Server-Sent Events. Each message has the event's `id` and its CloudEvent (structured JSON,
 * without ext properties) as `data`. A comment line every `heartbeat` ms keeps proxies from
 * closing an idle stream. A client more than `maxBacklog` events behind is disconnected rather
 * than buffered without bound. The stream ends when the container closes.
 */
export function eventsStream<E extends EventMap>(
  container: Container<E>,
  heartbeat: number,
  maxBacklog: number,
): (c: Context) => Response | Promise<Response> {
  return (c) => {
    if (container.closed) return c.json({ error: 'the container is draining: no new streams' }, 503)
    const type = glob(c.req.query('type'), 'type')
    const subject = glob(c.req.query('subject'), 'subject')
    if (type instanceof Response) return type
    if (subject instanceof Response) return subject
    return streamSSE(c, (stream) => {
      return new Promise<void>((resolve) => {
        let backlog = 0
        let ended = false
        let sub: Subscription | undefined
        let writing: Promise<unknown> = Promise.resolve()
        const end = (): void => {
          if (ended) return
          ended = true
          sub?.unsubscribe()
          clearInterval(timer)
          // Queued writes may go out, but a client that stopped reading must not hold the
          // response open: past a short grace the stream is aborted.
          const grace = setTimeout(() => {
            stream.abort()
            resolve()
          }, 1000)
          grace.unref?.()
          void writing.then(() => {
            clearTimeout(grace)
            resolve()
          })
        }
        const write = (fn: () => Promise<unknown>): void => {
          writing = writing.then(fn).catch(end)
        }
        const timer = setInterval(() => write(() => stream.write(': keep-alive\n\n')), heartbeat)
        timer.unref?.()
        stream.onAbort(end)
        sub = container.events$.subscribe({
          next(e) {
            if (ended || (type && !type(e.type)) || (subject && !subject(e.subject))) return
            if (++backlog > maxBacklog) return end()
            const data = JSON.stringify(toCloudEvent(e))
            write(async () => {
              await stream.writeSSE({ id: e.id, data })
              backlog--
            })
          },
          complete: end,
          error: end,
        })
        if (ended) sub.unsubscribe()
      })
    })
  }
}
