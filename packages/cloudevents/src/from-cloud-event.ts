import type { IncomingEvent } from '@substate/core'
import { ValidationError } from '@substate/core'
import {
  isJsonMediaType,
  mediaType,
  normaliseExtensionName,
  parseJson,
  RESERVED,
} from './_internal.js'

/**
 * A validation failure on the parsing path. A plain object, not an `Error`: building a stack trace
 * for every rejected event is what makes the `cloudevents` SDK's receive path slow, so the parser
 * makes one `ValidationError` per rejected request, at the edge.
 */
export class Invalid {
  constructor(
    readonly field: string,
    readonly message: string,
  ) {}
  toError(): ValidationError {
    return new ValidationError(this.field, this.message)
  }
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] }

// RFC 3339 `date-time` (the CloudEvents `Timestamp` type).
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/

const REQUIRED = ['specversion', 'id', 'source', 'type', 'subject'] as const

/**
 * Validates the attributes of one event (a structured JSON object, or the `ce-` headers of a
 * binary message with `headers` set) and maps them to an {@link IncomingEvent}. `at` prefixes
 * field names (`[2].` in a batch). Attributes whose value is `null` count as absent. The payload is
 * `data`, or `data_base64` decoded and parsed when `datacontenttype` is JSON (kept as the base64
 * string otherwise, so the payload stays a JSON value).
 * @internal
 */
export function readEvent(
  obj: unknown,
  at: string,
  headers = false,
): Mutable<IncomingEvent> | Invalid {
  const where = (attr: string): string => (headers ? `the ce-${attr} header` : `"${attr}"`)
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj))
    return new Invalid(at === '' ? 'body' : at.slice(0, -1), 'an event must be a JSON object')
  const attrs = obj as Record<string, unknown>
  const event: Mutable<IncomingEvent> = { id: '', source: '', type: '', subject: '' }
  let extensions: Record<string, string | number | boolean> | undefined
  let contentType: string | undefined
  let seen = 0
  for (const key in attrs) {
    const v = attrs[key]
    if (v === null || v === undefined) continue
    switch (key) {
      case 'id':
      case 'source':
      case 'type':
      case 'subject':
        if (typeof v !== 'string' || v === '')
          return new Invalid(at + key, `${where(key)} must be a non-empty string`)
        event[key] = v
        seen++
        break
      case 'specversion':
        if (v !== '1.0')
          return new Invalid(
            at + key,
            `${where(key)} must be "1.0" (got ${JSON.stringify(v)}); only CloudEvents 1.0 is accepted`,
          )
        seen++
        break
      case 'time': {
        const ms = typeof v === 'string' && RFC3339.test(v) ? Date.parse(v.toUpperCase()) : NaN
        if (Number.isNaN(ms))
          return new Invalid(at + key, `${where(key)} must be an RFC 3339 timestamp`)
        event.time = ms
        break
      }
      case 'datacontenttype':
      case 'dataschema':
        // KRules' HTTP dispatcher sends Python's `str(None)` for "no value".
        if (v === 'None') break
        if (typeof v !== 'string' || v === '')
          return new Invalid(at + key, `${where(key)} must be a non-empty string`)
        if (key === 'datacontenttype') contentType = v
        break
      case 'data':
      case 'data_base64':
        if (headers)
          return new Invalid(at + key, `ce-${key} is not a header: in binary mode data is the body`)
        break
      case 'originid':
      case 'propertyname':
        if (typeof v !== 'string' || v === '')
          return new Invalid(at + key, `${where(key)} must be a non-empty string`)
        if (key === 'originid') event.originId = v
        else event.propertyName = v
        break
      default: {
        // Every extension name is read the same way: normalised to the spec's alphabet (KRules
        // sends `tenant_id`, `region.code`), rejected when nothing is left, when it would pass for
        // a context attribute, or when two names meet.
        const name = normaliseExtensionName(key)
        const shown = headers ? `ce-${key}` : JSON.stringify(key)
        if (name === '')
          return new Invalid(
            at + key,
            `invalid extension name ${shown}: CloudEvents attribute names are lower-case letters and digits, and it has none`,
          )
        if (RESERVED.has(name))
          return new Invalid(
            at + key,
            `invalid extension name ${shown}: it reads as "${name}", a context attribute`,
          )
        if (extensions !== undefined && Object.hasOwn(extensions, name))
          return new Invalid(
            at + key,
            `invalid extension name ${shown}: it reads as "${name}", which another extension of this event already has`,
          )
        if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean')
          return new Invalid(
            at + key,
            `extension ${where(key)} must be a string, number or boolean`,
          )
        extensions ??= {}
        extensions[name] = v
      }
    }
  }
  if (seen < REQUIRED.length) {
    for (const key of REQUIRED)
      if (attrs[key] === undefined || attrs[key] === null)
        return new Invalid(
          at + key,
          key === 'subject'
            ? `${where(key)} is required: Substate routes every event to a subject`
            : `${where(key)} is required`,
        )
  }
  if (extensions !== undefined) event.extensions = extensions
  if (headers) return event
  const data = attrs.data
  const base64 = attrs.data_base64
  if (base64 !== undefined && base64 !== null) {
    if (data !== undefined && data !== null)
      return new Invalid(`${at}data`, '"data" and "data_base64" are mutually exclusive')
    if (typeof base64 !== 'string')
      return new Invalid(`${at}data_base64`, '"data_base64" must be a base64 string')
    if (contentType === undefined || isJsonMediaType(mediaType(contentType))) {
      try {
        event.payload = parseJson(Buffer.from(base64, 'base64').toString('utf8'))
      } catch {
        return new Invalid(`${at}data_base64`, '"data_base64" does not hold JSON')
      }
    } else event.payload = base64
  } else if (data !== undefined) event.payload = data
  return event
}

/**
 * Maps a CloudEvent 1.0 (a structured-mode JSON object, or an SDK `CloudEvent`) to the
 * {@link IncomingEvent} `container.receive` takes, validating it on the way: `specversion` `1.0`;
 * non-empty `id`, `source`, `type` and `subject` (required by Substate); `time` RFC 3339 (any
 * number of fractional digits, `Z` or an offset: Python's `isoformat()` passes); extension values
 * strings, numbers or booleans. `originid` and `propertyname` become `originId` and
 * `propertyName`; other extensions stay in `extensions`.
 *
 * Liberal where it is safe, for senders such as Python KRules: an extension name is lower-cased
 * and loses every character outside `[a-z0-9]` (`tenant_id` → `tenantid`, `region.code` →
 * `regioncode`, the rule `extensionName()` applies when sending); a name left empty, one that
 * reads as a context attribute (`origin_id`), or two names that read the same are rejected,
 * never dropped. `datacontenttype` / `dataschema` equal to `"None"` (Python's `str(None)`) count
 * as absent. JSON data may hold Python's bare `NaN` / `Infinity` / `-Infinity` (read as those
 * numbers). Extension values stay as sent (`"True"`, `"None"`, `"7"` are strings). Throws a
 * `ValidationError` whose `field` names the offending attribute as sent.
 *
 * @example
 * const result = await container.receive(fromCloudEvent(JSON.parse(body)))
 */
export function fromCloudEvent(cloudEvent: unknown): IncomingEvent {
  const r = readEvent(cloudEvent, '')
  if (r instanceof Invalid) throw r.toError()
  return r
}
