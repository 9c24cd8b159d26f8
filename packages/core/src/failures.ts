import { unsubscribe } from './_internal.js'
import { type Clock, systemClock } from './clock.js'
import { HandlerError } from './errors.js'
import { consoleLogger, eventFields, type Logger } from './logger.js'
import type { Metrics } from './metrics.js'
import { addFailures, type Scope } from './scope.js'
import type {
  DeadLetterSink,
  EmitResult,
  HandlerFailure,
  SubstateEvent,
  Unsubscribe,
} from './types.js'

/**
 * The failure path of a container. `fail` records a failure of an event (in its scope) and
 * notifies; `report` only notifies (a throwing filter, a failed dead-letter sink, a schedule's
 * claim); `exhausted` is a handler's last attempt failing (dead-letter, then `fail`); `notify`
 * calls the `onError` hooks and logs; `aggregate` makes the error `errorMode: 'throw'` rejects with.
 * Every failure goes to the container's `logger` when one is given; without a logger, to the
 * console unless an `onError` hook takes it.
 */
export class Failures {
  readonly #hooks = new Set<(f: HandlerFailure) => void>()
  readonly #deadLetter: DeadLetterSink | undefined
  readonly #logger: Logger | undefined
  readonly #metrics: Metrics | undefined
  readonly #clock: Clock
  /** The container's logger: the one given, or the console. */
  readonly log: Logger

  constructor(
    deadLetter: DeadLetterSink | undefined,
    logger?: Logger,
    metrics?: Metrics,
    clock: Clock = systemClock,
  ) {
    this.#deadLetter = deadLetter
    this.#logger = logger
    this.#metrics = metrics
    this.#clock = clock
    this.log = logger ?? consoleLogger
  }

  onError(hook: (failure: HandlerFailure) => void): Unsubscribe {
    this.#hooks.add(hook)
    return unsubscribe(() => this.#hooks.delete(hook))
  }

  /** After a handler's last attempt: dead-letter if a sink is configured, then record the failure. */
  async exhausted(
    handler: string,
    event: SubstateEvent,
    scope: Scope,
    e: unknown,
    attempts: number,
  ): Promise<void> {
    let deadLettered = false
    const error = new HandlerError(handler, event.type, event.subject, { cause: e })
    if (this.#deadLetter) {
      try {
        await this.#deadLetter.put({ event, handler, error, attempts, at: this.#clock.now() })
        deadLettered = true
        if (this.#metrics) this.#metrics.deadLetters++
      } catch (dlError) {
        this.report(`dead-letter:${handler}`, event, dlError)
      }
    }
    const durable = deadLettered && this.#deadLetter!.durable
    this.fail(scope, handler, event, error, attempts, deadLettered, durable)
  }

  /** Records a failure of `event` in `scope` and notifies the hooks. */
  fail(
    scope: Scope,
    handler: string,
    event: SubstateEvent,
    e: unknown,
    attempts: number,
    deadLettered: boolean,
    durable: boolean,
  ): void {
    const error =
      e instanceof HandlerError
        ? e
        : new HandlerError(handler, event.type, event.subject, { cause: e })
    const failure: HandlerFailure = { handler, event, error, attempts, deadLettered, durable }
    addFailures(scope, [failure])
    if (this.#metrics) this.#metrics.failures++
    this.notify(failure)
  }

  /** Reported but not a failure of the event (a throwing filter, a dead-letter sink that failed). */
  report(
    handler: string,
    event: SubstateEvent,
    e: unknown,
    level: 'error' | 'warn' = 'error',
  ): void {
    const error = new HandlerError(handler, event.type, event.subject, { cause: e })
    this.notify({ handler, event, error, attempts: 1, deadLettered: false, durable: false }, level)
  }

  /**
   * A unit of work that failed without a handler failure (its store failed) was reported by
   * nobody: report it (handler failures were reported by the dispatch).
   */
  reportUnstored(
    what: string,
    event: SubstateEvent,
    outcome: { status: string; result?: EmitResult; error?: Error } | undefined,
  ): void {
    if (outcome?.status !== 'failed' || (outcome.result?.failures.length ?? 0) > 0) return
    this.report(what, event, outcome.error)
  }

  notify(failure: HandlerFailure, level: 'error' | 'warn' = 'error'): void {
    if (this.#logger !== undefined || this.#hooks.size === 0) this.#log(failure, level)
    for (const hook of this.#hooks) {
      try {
        hook(failure)
      } catch (e) {
        this.log.error({ ...eventFields(failure.event), err: e }, 'an onError hook threw')
      }
    }
  }

  #log(failure: HandlerFailure, level: 'error' | 'warn'): void {
    const { handler, event, error, attempts, deadLettered } = failure
    const fields: Record<string, unknown> = {
      ...eventFields(event),
      handler,
      attempts,
      deadLettered,
      // The handler's own error (with its stack) rather than the wrapper.
      err: error.cause instanceof Error ? error.cause : error,
    }
    try {
      this.log[level](fields, error.message)
    } catch {
      // A logger that throws must not break the failure path.
    }
  }

  /** The error of an event whose handlers failed (not dead-lettered). */
  aggregate(result: EmitResult): AggregateError {
    const failed = result.failures.filter((f) => !f.deadLettered)
    return new AggregateError(
      failed.map((f) => f.error),
      `${failed.length} handler(s) failed on ${result.event.type} for ${result.event.subject}: ${failed.map((f) => f.error.message).join('; ')}`,
    )
  }
}
