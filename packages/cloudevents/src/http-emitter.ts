import type { OutboundEmitter, OutboundMeta, Subject, SubstateEvent } from '@substate/core'
import { DeliveryError, ShutdownError, TimeoutError } from '@substate/core'
import { MIME_CE_JSON } from './_internal.js'
import { type ToCloudEventOptions, toCloudEvent } from './to-cloud-event.js'
import { toHttpMessage } from './to-http-message.js'

/** Options of {@link httpEmitter}. */
export interface HttpEmitterOptions extends ToCloudEventOptions {
  /** Where to POST the events. */
  readonly url: string | URL
  /**
   * `binary` (attributes in `ce-` headers, payload as the JSON body) or `structured`
   * (`application/cloudevents+json`).
   * @default 'binary'
   */
  readonly mode?: 'binary' | 'structured'
  /**
   * Send to a Python KRules 3.x receiver (`KrulesApp`, FastAPI): it reads structured mode only and
   * answers binary mode 422. Sends structured mode with `Content-Type: application/cloudevents+json`
   * (no parameters), the body KRules' receiver was recorded accepting (property events carry
   * `{ property_name, old_value, value }` in `data`, which it reads into `ctx.property_name`,
   * `old_value`, `new_value`; it drops extensions). With `mode: 'binary'` it is a `TypeError`.
   * @default false
   */
  readonly krules?: boolean
  /**
   * Milliseconds one attempt may take (connecting, sending, reading the response).
   * @default 10_000
   */
  readonly timeout?: number
  /**
   * Further attempts after the first fails with a network error, a timeout, a 5xx, 408 or 429.
   * Other 4xx answers are final: the receiver rejected the event and would again.
   * @default 3
   */
  readonly retries?: number
  /**
   * Delay before retry n (1-based): `initial * factor^(n-1)` ms, capped at `max`, ±20 % jitter.
   * @default { initial: 100, factor: 2, max: 5_000 }
   */
  readonly backoff?: { readonly initial?: number; readonly factor?: number; readonly max?: number }
  /**
   * The longest wait, in ms, that a `Retry-After` header on a 503 or 429 may ask for (delay
   * seconds or an HTTP date). Such an answer is retried after the delay it asks for, capped at
   * this, instead of after the backoff; a longer request is cut to this wait, not refused.
   * @default 60_000
   */
  readonly maxRetryAfter?: number
  /** Headers added to every request (authorization, tracing). @default {} */
  readonly headers?: Readonly<Record<string, string>>
  /** The `fetch` to use. @default globalThis.fetch */
  readonly fetch?: typeof fetch
  /** The emitter's name in failures (`route:<name>`). @default `http:<url>` */
  readonly name?: string
}

const retryable = (status: number): boolean => status >= 500 || status === 408 || status === 429

/**
 * The wait a `Retry-After` header asks for, in ms (RFC 9110 §10.2.3: delay seconds or an HTTP
 * date, a date in the past meaning now), or `undefined` when it is absent or not valid.
 */
function retryAfter(value: string | null, now: number): number | undefined {
  if (value === null) return undefined
  const text = value.trim()
  if (/^\d+$/.test(text)) return Number(text) * 1000
  const date = Date.parse(text)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now)
}

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve()
    const done = (): void => {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal.addEventListener('abort', done, { once: true })
  })

// A delivery failure. TODO(core): a `DeliveryError` (code 'DELIVERY', with url, status, attempts)
// in @substate/core's errors.ts; until then an Error with a message that says what to do.
function deliveryError(message: string, cause?: unknown): Error {
  return new DeliveryError('cloudevents', message, cause === undefined ? undefined : { cause })
}

/**
 * An outbound emitter that POSTs events as CloudEvents over HTTP: give it to `container.route` or
 * to `createContainer({ targets: { dispatchUrl } })`. Each event carries its subject's ext
 * properties as extensions and `originid`. `send` resolves when the receiver answered 2xx; it
 * retries network errors, timeouts, 5xx, 408 and 429 with backoff (after the delay a 503's or
 * 429's `Retry-After` asks for, up to `maxRetryAfter`, when it has one), and rejects (the caller sees a
 * `route:<name>` failure) once retries are exhausted or on any other status. `flush()` waits for
 * sends in flight; after `close()` sends reject with `ShutdownError` and pending backoffs end.
 *
 * @example
 * container.route('alerts.*', httpEmitter({ url: 'http://127.0.0.1:8080/' }), { policy: 'direct' })
 * // to a Python KRules service's FastAPI receiver (structured mode only)
 * container.route('orders.*', httpEmitter({ url: 'http://127.0.0.1:8000/', krules: true }))
 *
 * const container = createContainer({ targets: { dispatchUrl: (url) => httpEmitter({ url }) } })
 * await container.emit('device.reboot', 'device:1', {}, { dispatchUrl: 'http://127.0.0.1:8081/' })
 */
export function httpEmitter({
  url,
  mode,
  krules = false,
  timeout = 10_000,
  retries = 3,
  backoff: { initial = 100, factor = 2, max = 5_000 } = {},
  maxRetryAfter = 60_000,
  headers: extraHeaders = {},
  fetch: doFetch = globalThis.fetch,
  name = `http:${String(url)}`,
  onInvalidExtension,
}: HttpEmitterOptions): OutboundEmitter {
  const target = String(url)
  if (krules && mode === 'binary')
    throw new TypeError(
      "httpEmitter(): a KRules receiver reads structured mode only; drop mode: 'binary'",
    )
  const send = krules ? 'structured' : (mode ?? 'binary')
  if (typeof doFetch !== 'function')
    throw new TypeError('httpEmitter(): no fetch available; pass { fetch } (Node >= 20 has one)')
  if (!(retries >= 0) || !(timeout > 0) || !(maxRetryAfter >= 0))
    throw new TypeError('httpEmitter(): retries and maxRetryAfter must be >= 0 and timeout > 0')
  const closing = new AbortController()
  const inflight = new Set<Promise<void>>()

  async function deliver(
    event: SubstateEvent,
    subject: Subject,
    meta: OutboundMeta | undefined,
  ): Promise<void> {
    const ce = toCloudEvent(event, await subject.getExtProps(), { onInvalidExtension })
    const message = toHttpMessage(ce, send)
    if (krules) message.headers['content-type'] = MIME_CE_JSON
    // Names compared without case: the CloudEvents headers win over the emitter's and an
    // interceptor's, whatever their spelling.
    const headers: Record<string, string> = {}
    for (const [k, v] of Object.entries(extraHeaders)) headers[k.toLowerCase()] = v
    for (const [k, v] of Object.entries(meta?.headers ?? {})) headers[k.toLowerCase()] = v
    Object.assign(headers, message.headers)
    // The trace context also as W3C Trace Context headers, for HTTP-level tracing in between.
    if (typeof ce.traceparent === 'string') headers.traceparent = ce.traceparent
    if (typeof ce.tracestate === 'string') headers.tracestate = ce.tracestate
    const init = { method: 'POST', headers }
    const what = `POST ${target} of ${event.type} ${event.id} (subject ${event.subject})`
    for (let attempt = 1; ; attempt++) {
      const last = attempt > retries
      const signal = AbortSignal.any([closing.signal, AbortSignal.timeout(timeout)])
      let failure: Error
      let final = last
      let asked: number | undefined
      try {
        const res = await doFetch(target, { ...init, body: message.body, signal })
        const text = await res.text()
        if (res.ok) return
        if (!retryable(res.status)) final = true
        if (res.status === 503 || res.status === 429)
          asked = retryAfter(res.headers.get('retry-after'), Date.now())
        failure = deliveryError(
          `${what} answered ${res.status} ${res.statusText} after ${attempt} attempt(s)${retryable(res.status) ? '' : ' (not retried: the receiver rejected the event)'}: ${text.slice(0, 300)}`,
        )
      } catch (e) {
        if (closing.signal.aborted) throw new ShutdownError(`${what} aborted: the emitter closed`)
        failure =
          (e as Error)?.name === 'TimeoutError'
            ? new TimeoutError(`${what} (attempt ${attempt})`, timeout)
            : deliveryError(
                `${what} failed after ${attempt} attempt(s): ${(e as Error)?.message ?? e} (is the receiver up at ${target}?)`,
                e,
              )
      }
      if (final) throw failure
      const delay =
        asked !== undefined
          ? Math.min(asked, maxRetryAfter)
          : Math.min(max, initial * factor ** (attempt - 1)) * (0.8 + Math.random() * 0.4)
      await sleep(delay, closing.signal)
      if (closing.signal.aborted) throw new ShutdownError(`${what} aborted: the emitter closed`)
    }
  }

  const flush = async (): Promise<void> => {
    while (inflight.size > 0) await Promise.all(inflight)
  }
  return {
    name,
    send(event, subject, meta) {
      if (closing.signal.aborted)
        return Promise.reject(new ShutdownError(`${name} is closed: cannot send ${event.type}`))
      const p = deliver(event, subject, meta)
      const tracked = p.then(
        () => {},
        () => {},
      )
      inflight.add(tracked)
      void tracked.then(() => inflight.delete(tracked))
      return p
    },
    flush,
    async close() {
      closing.abort()
      await flush()
    },
  }
}
