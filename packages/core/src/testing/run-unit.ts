import type { JsonValue } from '../json.js'
import type { SubstateEvent } from '../types.js'
import type { IncomingEvent, ReceiveResult } from '../unit-of-work.js'
import { type FakeClock, turn } from './fake-clock.js'
import { observeSends, type SentMessage } from './fake-emitter.js'
import type { EventSource } from './record-events.js'

/** What {@link runUnit} needs of a container. */
export interface UnitRunner extends EventSource {
  receive(event: IncomingEvent): Promise<ReceiveResult>
}

/** An event for {@link runUnit}: an `IncomingEvent` whose `id` and `source` may be left out. */
export type TestEvent = Omit<IncomingEvent, 'id' | 'source'> & {
  /** @default a new one per call (`test-<n>`) */
  readonly id?: string
  /** @default 'test' */
  readonly source?: string
}

/** Options of {@link runUnit}. */
export interface RunUnitOptions {
  /**
   * The container's fake clock: time is skipped until the unit is done (`clock.runUntil`), so
   * retries with backoff, handler timeouts and batch waits take no real time.
   * @default none (the unit runs in real time)
   */
  readonly clock?: FakeClock
}

/** What one unit of work did, as {@link runUnit} saw it. */
export interface UnitReport extends ReceiveResult {
  /** The event as received (with its `id` and `source`). */
  readonly event: IncomingEvent
  /** The events the unit published once it committed (its own first), in order; none when it failed. */
  readonly events: readonly SubstateEvent[]
  /**
   * The properties the unit changed and stored, per subject: each property's last value. From
   * its property events: a muted write, or an ext property, emits none (read those back).
   */
  readonly stored: Readonly<Record<string, Readonly<Record<string, JsonValue>>>>
  /** The properties the unit deleted, per subject (deleted last, not set again). */
  readonly deleted: Readonly<Record<string, readonly string[]>>
  /**
   * What the unit sent to fake emitters (`fakeEmitter()`) once it committed, in order; none when it
   * failed (its sends never go out).
   */
  readonly sent: readonly SentMessage[]
}

let seq = 0

/**
 * Hands `event` to `container.receive`, as an ingress does, and reports what the unit of work
 * stored, published and sent. The unit's events and sends are told apart from others' by their
 * origin id (the event's `originId`, or its `id`).
 *
 * @example
 * const unit = await runUnit(container, { type: 'order.paid', subject: 'order:1' })
 * expect(unit.status).toBe('handled')
 * expect(unit.stored).toEqual({ 'order:1': { status: 'paid' } })
 * expect(unit.sent.map((m) => m.event.type)).toEqual(['invoice.requested'])
 */
export async function runUnit(
  container: UnitRunner,
  event: TestEvent,
  { clock }: RunUnitOptions = {},
): Promise<UnitReport> {
  if (
    typeof container?.receive !== 'function' ||
    typeof container.events$?.subscribe !== 'function'
  )
    throw new TypeError('runUnit(): the first argument must be a container')
  const input: IncomingEvent = {
    ...event,
    id: event.id ?? `test-${++seq}`,
    source: event.source ?? 'test',
  }
  const origin = input.originId ?? input.id
  const events: SubstateEvent[] = []
  const sent: SentMessage[] = []
  const subscription = container.events$.subscribe((e) => {
    if (e.originId === origin) events.push(e)
  })
  const stopSends = observeSends((m) => {
    if (m.event.originId === origin) sent.push(m)
  })
  let result: ReceiveResult
  try {
    const receiving = container.receive(input)
    result = await (clock === undefined ? receiving : clock.runUntil(receiving))
    // Sends start right after the commit; route interceptors may take a turn to reach the emitter.
    await turn()
  } finally {
    subscription.unsubscribe()
    stopSends()
  }
  const stored: Record<string, Record<string, JsonValue>> = {}
  const deleted: Record<string, Set<string>> = {}
  for (const e of events) {
    // The received event itself is not a write of this unit.
    if (e.propertyName === undefined || (e.id === input.id && e.source === input.source)) continue
    const props = stored[e.subject] ?? {}
    const gone = deleted[e.subject] ?? new Set<string>()
    stored[e.subject] = props
    deleted[e.subject] = gone
    if (e.type === 'subject-property-changed') {
      props[e.propertyName] = e.newValue as JsonValue
      gone.delete(e.propertyName)
    } else if (e.type === 'subject-property-deleted') {
      delete props[e.propertyName]
      gone.add(e.propertyName)
    }
  }
  return {
    ...result,
    event: input,
    events,
    stored: Object.fromEntries(
      Object.entries(stored).filter(([, props]) => Object.keys(props).length > 0),
    ),
    deleted: Object.fromEntries(
      Object.entries(deleted)
        .filter(([, names]) => names.size > 0)
        .map(([subject, names]) => [subject, [...names]]),
    ),
    sent,
  }
}
