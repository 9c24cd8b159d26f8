import type {
  Container,
  DeadLetter,
  DeadLetterQuery,
  StoredDeadLetter,
  SubstateEvent,
} from '@substate/core'
import type { Context } from 'hono'
import { describeError } from './inspector-recorder.js'

/** Most dead letters one listing returns. */
const LIMIT = 500

/** Lists dead letters: newest first, filtered, at most `limit`. */
type ListDeadLetters = (query: DeadLetterQuery, limit: number) => Promise<readonly DeadLetter[]>

/**
 * Where the Dead letters view reads: the inspector's `deadLetters` option (filtered here), or the
 * container's sink when it can list its entries; undefined when there is neither.
 */
function deadLetterSource(
  container: Container,
  option: (() => Promise<readonly DeadLetter[]> | readonly DeadLetter[]) | undefined,
): ListDeadLetters | undefined {
  if (option !== undefined)
    return async (query, limit) =>
      [...(await option())]
        .reverse() // entries of one millisecond: the last given first
        .filter(
          (d) =>
            (query.handler === undefined || d.handler === query.handler) &&
            (query.type === undefined || d.event.type === query.type) &&
            (query.subject === undefined || d.event.subject === query.subject),
        )
        .sort((a, b) => b.at - a.at)
        .slice(0, limit)
  const sink = container.deadLetter
  if (typeof sink?.list !== 'function') return undefined
  const list = sink.list.bind(sink)
  return (query, limit) => list({ ...query, limit })
}

/**
 * `GET api/dead-letters?handler=&type=&subject=`: `{ configured, items, truncated }`, items newest
 * first with their entry `id` when the sink keeps one.
 */
export function deadLettersApi<T>(
  container: Container,
  option: (() => Promise<readonly DeadLetter[]> | readonly DeadLetter[]) | undefined,
  inspected: (e: SubstateEvent) => T,
): (c: Context) => Promise<Response> {
  const list = deadLetterSource(container, option)
  return async (c) => {
    if (list === undefined) return c.json({ configured: false, items: [] })
    const query: DeadLetterQuery = {}
    for (const field of ['handler', 'type', 'subject'] as const) {
      const value = c.req.query(field)
      if (value) Object.assign(query, { [field]: value })
    }
    const found = await list(query, LIMIT + 1)
    const items = found.slice(0, LIMIT).map((d) => {
      const id = (d as Partial<StoredDeadLetter>).id
      return {
        ...(id === undefined ? {} : { id }),
        handler: d.handler,
        error: describeError(d.error),
        attempts: d.attempts,
        at: d.at,
        event: inspected(d.event),
      }
    })
    return c.json({ configured: true, items, truncated: found.length > LIMIT })
  }
}
