import type { Clock, ClockTimer } from './clock.js'
import type { EventContext } from './event-context.js'
import type { BatchHandler, Handler } from './handlers.js'
import { type Scope, scopes } from './scope.js'
import type { BatchOptions, HandlerFailure } from './types.js'
import type { UnitState } from './unit-state.js'

interface OpenBatch {
  readonly ctxs: EventContext[]
  depth: number
  readonly done: Promise<void>
  settle(error?: unknown): void
  timer: ClockTimer | undefined
}

/**
 * Runs a batch as a unit of work: `body` runs once per attempt with a new unit (again after a
 * conflict) and resolves with its cascade's failures; rejects when the unit failed.
 */
export type RunUnit = (
  home: string,
  body: (unit: UnitState) => Promise<readonly HandlerFailure[]>,
) => Promise<void>

/** Batch handlers (`on(pattern, { batch: { size, wait } }, handler)`) of a container. */
export class Batches {
  /** Flushes the partial batch of each batch handler (on close). */
  readonly #flushes = new Set<() => void>()
  readonly #state: { readonly closing: boolean }
  readonly #runUnit: RunUnit
  /** Times the batches' `wait`. */
  readonly #clock: Clock

  constructor(state: { readonly closing: boolean }, runUnit: RunUnit, clock: Clock) {
    this.#state = state
    this.#runUnit = runUnit
    this.#clock = clock
  }

  /** Handles the partial batches now: nothing more is coming to fill them. */
  flushAll(): void {
    for (const flush of [...this.#flushes]) flush()
  }

  /**
   * The per-event handler of a batch handler: each event joins the open batch and waits for it.
   * The batch runs as a unit of work of its own (in a scope below its events' deepest, with the
   * first event's origin id): what it writes is stored before any of its events completes, and
   * when it fails (or a nested handler does) nothing it cached is stored and every one of its
   * events fails, to be retried or dead-lettered event by event.
   */
  readonly wrap = (
    name: string,
    { size, wait }: BatchOptions,
    timeout: number | undefined,
    fn: BatchHandler,
  ): Handler => {
    if (!(Number.isInteger(size) && size >= 1))
      throw new TypeError(`${name}: batch.size must be an integer >= 1, got ${size}`)
    if (!(typeof wait === 'number' && wait >= 0 && Number.isFinite(wait)))
      throw new TypeError(`${name}: batch.wait must be a number of milliseconds >= 0, got ${wait}`)
    if (timeout !== undefined)
      throw new TypeError(
        `${name}: a batch handler takes no timeout (its events' wait for the batch would count against it; bound the work inside the handler)`,
      )
    let open: OpenBatch | undefined
    const flush = (): void => {
      const batch = open
      if (batch === undefined) return
      open = undefined
      this.#flushes.delete(flush)
      this.#clock.clearTimeout(batch.timer)
      this.#run(batch.ctxs, batch.depth, fn).then(
        () => batch.settle(),
        (e: unknown) => batch.settle(e ?? new Error('the batch handler failed')),
      )
    }
    return (ctx) => {
      if (open === undefined) {
        let settle!: (error?: unknown) => void
        const done = new Promise<void>((resolve, reject) => {
          settle = (error) => (error === undefined ? resolve() : reject(error))
        })
        open = { ctxs: [], depth: 0, done, settle, timer: undefined }
        this.#flushes.add(flush)
        if (this.#state.closing) queueMicrotask(flush)
        else open.timer = this.#clock.setTimeout(flush, wait)
      }
      const batch = open
      batch.ctxs.push(ctx)
      batch.depth = Math.max(batch.depth, scopes.getStore()?.depth ?? 0)
      if (batch.ctxs.length >= size) flush()
      return batch.done
    }
  }

  /**
   * Runs one batch as a unit of work of its own: stored, all or nothing, when it and its cascade
   * succeeded (a failure in the cascade counts unless durably dead-lettered: its events may be
   * ingress units, which would not be acknowledged); run again on a conflict.
   */
  #run(ctxs: EventContext[], depth: number, fn: BatchHandler): Promise<void> {
    return this.#runUnit(ctxs[0]!.subject.name, async (unit) => {
      const scope: Scope = { depth: depth + 1, originId: ctxs[0]!.originId, failures: [], unit }
      await scopes.run(scope, () => fn(ctxs))
      return scope.failures
    })
  }
}
