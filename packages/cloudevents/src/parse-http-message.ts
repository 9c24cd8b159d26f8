import type { IncomingEvent, ValidationError } from '@substate/core'
import {
  decodeHeaderValue,
  isJsonMediaType,
  MIME_CE_BATCH,
  MIME_CE_JSON,
  mediaType,
  parseJson as parseJsonText,
} from './_internal.js'
import { Invalid, readEvent } from './from-cloud-event.js'

/** How an HTTP message carries CloudEvents (HTTP protocol binding §3). */
export type HttpMode = 'binary' | 'structured' | 'batch'

/** Request headers: a Fetch `Headers`, or a plain object such as Node's `IncomingHttpHeaders`. */
export type HeadersLike = Headers | Readonly<Record<string, string | readonly string[] | undefined>>

/** An HTTP request (or response) as far as CloudEvents care: headers and body. */
export interface HttpMessage {
  readonly headers: HeadersLike
  /** The body; bytes are decoded as UTF-8 where text is needed. */
  readonly body: string | Uint8Array
}

/** What {@link parseHttpMessage} returns: the events, or why there are none. */
export type ParseResult =
  | { readonly ok: true; readonly mode: HttpMode; readonly events: IncomingEvent[] }
  | {
      readonly ok: false
      /** 415 when the content type is no CloudEvents mode; 400 when an event is invalid. */
      readonly status: 400 | 415
      /** `field` names the offending attribute (`id`, `[2].source`, `body`, `content-type`, ...). */
      readonly error: ValidationError
    }

const decoder = new TextDecoder()
const text = (body: string | Uint8Array): string =>
  typeof body === 'string' ? body : decoder.decode(body)
const bytes = (body: string | Uint8Array): Buffer =>
  typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body)

// Hostile input: JSON bodies must be valid UTF-8 (not stored with replacement characters), and
// event data nests at most MAX_JSON_DEPTH arrays and objects (deeper values would overflow the
// stack of recursive code further on: copies, comparisons, serializers).
const utf8 = new TextDecoder('utf-8', { fatal: true })
/** Deepest nesting of arrays and objects accepted in an event's JSON data. */
const MAX_JSON_DEPTH = 256

/** Whether `value` nests deeper than MAX_JSON_DEPTH: iterative, so any depth is safe to check. */
function tooDeep(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false
  const stack: Array<[unknown, number]> = [[value, 1]]
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!
    if (depth > MAX_JSON_DEPTH) return true
    for (const child of Array.isArray(v) ? v : Object.values(v as object))
      if (typeof child === 'object' && child !== null) stack.push([child, depth + 1])
  }
  return false
}

/**
 * Data nested deeper than MAX_JSON_DEPTH takes an opening and a closing bracket per level: a body
 * shorter than that cannot hold it, and is not walked.
 */
const SHALLOW = 2 * MAX_JSON_DEPTH

function deepData(event: IncomingEvent, at: string, size: number): Invalid | undefined {
  return size > SHALLOW && tooDeep(event.payload)
    ? new Invalid(`${at}data`, `the data nests deeper than ${MAX_JSON_DEPTH} arrays and objects`)
    : undefined
}

function parseJson(body: string | Uint8Array, field: string): unknown {
  let source: string
  try {
    source = typeof body === 'string' ? body : utf8.decode(body)
  } catch {
    return new Invalid('data', 'the body is not valid UTF-8')
  }
  try {
    return parseJsonText(source)
  } catch (e) {
    return new Invalid(field, `the body is not valid JSON (${(e as Error).message})`)
  }
}

/** The headers {@link parseHttpMessage} reads besides the `ce-` ones. */
interface HeaderFields {
  contentType: string | undefined
  traceparent: string | undefined
  tracestate: string | undefined
}

/** Takes one header (name lower-cased); returns the `ce-` attributes, made on the first one. */
function header(
  h: HeaderFields,
  attrs: Record<string, string> | undefined,
  name: string,
  value: string,
): Record<string, string> | undefined {
  if (name === 'content-type') h.contentType = value
  else if (name === 'traceparent') h.traceparent = value
  else if (name === 'tracestate') h.tracestate = value
  else if (name.startsWith('ce-')) {
    // No prototype: `ce-__proto__` is an attribute like any other (and gets the same checks).
    attrs ??= Object.create(null) as Record<string, string>
    attrs[name.slice(3)] = decodeHeaderValue(value)
  }
  return attrs
}

function fail(status: 400 | 415, invalid: Invalid): ParseResult {
  return { ok: false, status, error: invalid.toError() }
}

/**
 * Reads the CloudEvents of an HTTP message and validates every one (the `cloudevents` SDK does not
 * by default). Never throws on bad input: it returns `{ ok: false, status, error }`.
 *
 * - `Content-Type: application/cloudevents+json`: **structured** mode, one event as JSON.
 * - `Content-Type: application/cloudevents-batch+json`: **batch** mode, a JSON array of events;
 *   one invalid event rejects the whole batch (its field is prefixed `[i].`).
 * - any `ce-` header: **binary** mode. Attributes come from `ce-` headers (percent-decoded, HTTP
 *   binding §3.1.3.2), `datacontenttype` from `Content-Type`, data from the body: JSON (or no
 *   content type) is parsed, `text/*` stays a string, other media types become a base64 string.
 *   This is the mode Python KRules' HTTP dispatcher sends; what it sends beyond the spec is
 *   accepted as `fromCloudEvent` describes (`ce-tenant_id` read as extension `tenantid`,
 *   `ce-datacontenttype: None`, `isoformat()` times, bare `NaN` / `Infinity` in the JSON body).
 * - otherwise a JSON content type (`application/json`) without `ce-` headers is read as
 *   structured mode, because many senders post structured events that way; anything else is 415.
 * - JSON bodies must be valid UTF-8, and JSON data may nest at most 256 arrays and objects:
 *   otherwise 400 naming `data` (`[i].data` in a batch).
 *
 * This is written here rather than taken from the SDK's `HTTP.toEvent`: that path builds and
 * validates a `CloudEvent` class instance (ajv schema, error objects) per event, which costs more
 * than handling the event, and it accepts events without `subject`, which Substate needs.
 *
 * @example
 * const parsed = parseHttpMessage({ headers: req.headers, body: await req.text() })
 * if (!parsed.ok) return json(parsed.status, { error: parsed.error.message, field: parsed.error.field })
 * for (const event of parsed.events) await container.receive(event)
 */
export function parseHttpMessage(message: HttpMessage): ParseResult {
  const { headers, body } = message
  const h: HeaderFields = { contentType: undefined, traceparent: undefined, tracestate: undefined }
  let attrs: Record<string, string> | undefined
  // Duck-typed: a Headers from another realm or undici copy is still a Headers.
  if (typeof (headers as Headers).get === 'function') {
    for (const [name, value] of headers as Headers) attrs = header(h, attrs, name, value)
  } else {
    // Node's headers object on the HTTP hot path: no [name, value] pair per header.
    const record = headers as Readonly<Record<string, unknown>>
    for (const name of Object.keys(record)) {
      const value = record[name]
      if (value === undefined) continue
      attrs = header(
        h,
        attrs,
        name.toLowerCase(),
        typeof value === 'string' ? value : Array.isArray(value) ? value.join(', ') : String(value),
      )
    }
  }
  const { contentType, traceparent, tracestate } = h
  const type = mediaType(contentType)

  if (type === MIME_CE_BATCH) {
    const list = parseJson(body, 'body')
    if (list instanceof Invalid) return fail(400, list)
    if (!Array.isArray(list))
      return fail(400, new Invalid('body', 'a batch must be a JSON array of events'))
    const events: IncomingEvent[] = new Array(list.length)
    for (let i = 0; i < list.length; i++) {
      const event = readEvent(list[i], `[${i}].`)
      if (event instanceof Invalid) return fail(400, event)
      const deep = deepData(event, `[${i}].`, body.length)
      if (deep) return fail(400, deep)
      events[i] = event
    }
    return { ok: true, mode: 'batch', events }
  }
  if (
    type === MIME_CE_JSON ||
    (attrs === undefined && isJsonMediaType(type) && !type.startsWith('application/cloudevents'))
  ) {
    const obj = parseJson(body, 'body')
    if (obj instanceof Invalid) return fail(400, obj)
    const event = readEvent(obj, '')
    if (event instanceof Invalid) return fail(400, event)
    const deep = deepData(event, '', body.length)
    if (deep) return fail(400, deep)
    traceHeaders(event, traceparent, tracestate)
    return { ok: true, mode: 'structured', events: [event] }
  }
  if (attrs === undefined || type.startsWith('application/cloudevents')) {
    return fail(
      415,
      new Invalid(
        'content-type',
        `unsupported content type ${JSON.stringify(contentType ?? '')}: send a binary-mode event (ce- headers), ${MIME_CE_JSON} or ${MIME_CE_BATCH}`,
      ),
    )
  }

  const event = readEvent(attrs, '', true)
  if (event instanceof Invalid) return fail(400, event)
  if (body.length > 0) {
    if (type === '' || isJsonMediaType(type)) {
      const data = parseJson(body, 'data')
      if (data instanceof Invalid) return fail(400, data)
      event.payload = data
      const deep = deepData(event, '', body.length)
      if (deep) return fail(400, deep)
    } else if (type.startsWith('text/')) event.payload = text(body)
    else event.payload = bytes(body).toString('base64')
  }
  traceHeaders(event, traceparent, tracestate)
  return { ok: true, mode: 'binary', events: [event] }
}

/**
 * W3C Trace Context sent as plain HTTP headers (`traceparent`, `tracestate`, as an instrumented
 * HTTP client sends them) becomes the event's Distributed Tracing extension when the event does
 * not carry one itself (single events only: a batch's events carry their own).
 */
function traceHeaders(
  event: { extensions?: Readonly<Record<string, string | number | boolean>> },
  traceparent: string | undefined,
  tracestate: string | undefined,
): void {
  if (traceparent === undefined || event.extensions?.traceparent !== undefined) return
  event.extensions = {
    ...event.extensions,
    traceparent,
    ...(tracestate === undefined ? {} : { tracestate }),
  }
}
