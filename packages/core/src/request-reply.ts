import type { Observable } from 'rxjs'
import type { IdGenerator } from './_internal.js'
import type { Clock, ClockTimer } from './clock.js'
import { ShutdownError, TimeoutError } from './errors.js'
import type { EmitOptions } from './event-context.js'
import type { Events } from './events.js'
import type { Failures } from './failures.js'
import { compileGlob } from './router.js'
import { scopes } from './scope.js'
import type { Subject, SubstateEvent } from './types.js'

/** Options of `container.request`. */
export interface RequestOptions extends EmitOptions {
  /** The reply's event type (a glob). */
  readonly reply: string
  /** @default 30_000 */
  readonly timeout?: number
}

/** What request/reply needs of its container. */
export interface RequestHost {
  readonly state: { readonly closing: boolean }
  /** Aborted when the container closes. */
  readonly signal: AbortSignal
  readonly events$: Observable<SubstateEvent>
  readonly ids: IdGenerator
  readonly events: Events
  readonly failures: Failures
  /** Times the reply's `timeout`. */
  readonly clock: Clock
}

/**
 * `container.request`: emits `type` and resolves with the first `reply` event of the same cascade
 * (same origin id), or rejects on timeout, on close, or when a handler failed and no reply came.
 */
export function request<R = unknown>(
  host: RequestHost,
  type: string,
  subject: Subject | string,
  payload?: unknown,
  options?: RequestOptions,
): Promise<SubstateEvent<R>> {
  if (typeof options?.reply !== 'string') {
    throw new TypeError('request(): options.reply (the reply event type) is required')
  }
  if (host.state.closing) return Promise.reject(new ShutdownError())
  const isReply = compileGlob(options.reply)
  const timeout = options.timeout ?? 30_000
  // The request starts its own cascade: its id is the origin id its replies carry.
  const originId = host.ids.next()
  return new Promise<SubstateEvent<R>>((resolve, reject) => {
    let timer: ClockTimer | undefined
    let settled = false
    const done = (settle: () => void): void => {
      if (settled) return
      settled = true
      host.clock.clearTimeout(timer)
      sub.unsubscribe()
      host.signal.removeEventListener('abort', onAbort)
      settle()
    }
    const sub = host.events$.subscribe({
      next: (e) => {
        if (e.originId === originId && isReply(e.type) && e.type !== type) {
          done(() => resolve(e as SubstateEvent<R>))
        }
      },
      complete: () =>
        done(() => reject(new ShutdownError('the container closed before the reply came'))),
    })
    const onAbort = (): void =>
      done(() => reject(new ShutdownError('the container closed before the reply came')))
    host.signal.addEventListener('abort', onAbort, { once: true })
    timer = host.clock.setTimeout(
      () =>
        done(() =>
          reject(new TimeoutError(`request ${type} (waiting for ${options.reply})`, timeout)),
        ),
      timeout,
    )
    scopes
      .exit(() => host.events.emitTop(type, subject, payload, options, originId))
      .then(
        (result) => {
          // A reply during the cascade resolved already; otherwise wait, unless it failed.
          if (!result.ok) done(() => reject(host.failures.aggregate(result)))
        },
        (e: unknown) => done(() => reject(e)),
      )
  })
}
