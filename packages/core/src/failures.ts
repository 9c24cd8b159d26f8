import { unsubscribe } from './_internal.js'
import { HandlerError } from './errors.js'
import type { Scope } from './scope.js'
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
 * calls the `onError` hooks; `aggregate` makes the error `errorMode: 'throw'` rejects with.
 */
export class Failures {
  readonly #hooks = new Set<(f: HandlerFailure) => void>()
  readonly #deadLetter: DeadLetterSink | undefined

  constructor(deadLetter: DeadLetterSink | undefined) {
    this.#deadLetter = deadLetter
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
        await this.#deadLetter.put({ event, handler, error, attempts, at: Date.now() })
        deadLettered = true
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
    scope.failures.push(failure)
    this.notify(failure)
  }

  /** Reported but not a failure of the event (a throwing filter, a dead-letter sink that failed). */
  report(handler: string, event: SubstateEvent, e: unknown): void {
    const error = new HandlerError(handler, event.type, event.subject, { cause: e })
    this.notify({ handler, event, error, attempts: 1, deadLettered: false, durable: false })
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

  notify(failure: HandlerFailure): void {
    if (this.#hooks.size === 0) {
      console.error(`[substate] ${failure.error.message}`)
      return
    }
    for (const hook of this.#hooks) {
      try {
        hook(failure)
      } catch (e) {
        console.error('[substate] an onError hook threw:', e)
      }
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
