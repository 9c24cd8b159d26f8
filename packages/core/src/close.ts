import type { Subject as RxSubject } from 'rxjs'
import type { Batches } from './batch.js'
import type { CloseReport } from './container-options.js'
import type { IdentityMap } from './identity-map.js'
import type { Lifecycle } from './lifecycle.js'
import type { Logger } from './logger.js'
import type { OutboxRelay } from './outbox.js'
import type { Scheduler } from './scheduler.js'
import type { SubjectStorage } from './storage.js'
import type { Timers } from './timers.js'
import type { OutboundEmitter, SubstateEvent } from './types.js'

/** The parts of a container its close stops, in order. */
export interface ClosingParts {
  readonly state: Lifecycle
  readonly scheduler: Scheduler
  readonly timers: Timers
  readonly batches: Batches
  readonly subjects: IdentityMap
  readonly relay: OutboxRelay
  /** The emitters made for explicit targets and routes (flushed, then closed). */
  readonly emitters: Iterable<OutboundEmitter>
  /** The storages of every subject used. */
  storages(): Set<SubjectStorage>
  /** `container.events$`'s source (completed last). */
  readonly stream: RxSubject<SubstateEvent>
  readonly logger: Logger
  readonly source: string
}

/**
 * A container's ordered close: intake, hooks, drain, timers, subjects, emitters, storage, streams.
 * Every step runs even when one before it failed; what failed is in the report.
 */
export async function closeInOrder(
  parts: ClosingParts,
  drainTimeout: number,
): Promise<CloseReport> {
  const { state, timers, relay } = parts
  state.beginClose()
  parts.scheduler.stopAll()
  const timersStopped = timers.stop() // no more polls or claims
  // Partial batches go now: nothing more is coming to fill them.
  parts.batches.flushAll()
  const drained = state.inflight
  const errors: unknown[] = []
  await state.runCloseHooks(errors)
  const timedOut = await state.drain(drainTimeout)
  await timersStopped
  // Timers being fired delete themselves once handled: before storage closes, unless the drain
  // timed out (their handlers were aborted; a timer not deleted fires again elsewhere).
  if (!timedOut) await timers.idle()
  let stored = 0
  for (const s of parts.subjects.states()) {
    if (!s.dirty) continue
    try {
      await s.store()
      stored++
    } catch (e) {
      errors.push(e)
    }
  }
  // Sends of committed units still going out finish before their emitters close.
  await relay.close()
  const outbox = await relay.pending()
  for (const e of parts.emitters) {
    try {
      await e.flush?.()
      await e.close?.()
    } catch (err) {
      errors.push(err)
    }
  }
  for (const st of parts.storages()) {
    try {
      await st.close()
    } catch (e) {
      errors.push(e)
    }
  }
  state.abort()
  parts.stream.complete()
  const report = { drained, stored, timedOut, errors, outbox }
  logClose(parts, report)
  return report
}

function logClose({ logger, source }: ClosingParts, r: CloseReport): void {
  try {
    for (const err of r.errors) logger.warn({ source, err }, 'close: a step failed')
    const fields = {
      source,
      drained: r.drained,
      stored: r.stored,
      timedOut: r.timedOut,
      errors: r.errors.length,
      outbox: r.outbox,
    }
    if (r.timedOut) logger.warn(fields, 'container closed: the drain timed out')
    else logger.info(fields, 'container closed')
  } catch {
    // A throwing logger does not fail close().
  }
}
