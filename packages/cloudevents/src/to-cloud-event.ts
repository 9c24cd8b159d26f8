import type { JsonValue, SubstateEvent } from '@substate/core'
import { ValidationError } from '@substate/core'
import { ATTRIBUTE_NAME, MIME_JSON, RESERVED } from './_internal.js'

/**
 * A CloudEvent 1.0 in its JSON (structured) form. The same shape as the `cloudevents` package's
 * `CloudEventV1<unknown>` (assignable both ways), declared here so that no SDK is needed.
 */
export interface CloudEvent {
  /** Identifies the event; `source` + `id` is unique per distinct event. */
  id: string
  /** The CloudEvents version, `1.0`. */
  specversion: string
  /** The context in which the event happened (a URI-reference). */
  source: string
  /** The kind of event, e.g. `device.alert.critical`. */
  type: string
  /** The media type of `data`, e.g. `application/json`. */
  datacontenttype?: string
  /** The schema `data` adheres to (a URI). */
  dataschema?: string
  /** The subject of the event in the context of the source. */
  subject?: string
  /** When the event happened (RFC 3339). */
  time?: string
  /** The payload. */
  data?: unknown
  /** A binary payload, base64-encoded (structured JSON mode). */
  data_base64?: string
  /** Extension attributes. */
  [extension: string]: unknown
}

/** Options of {@link toCloudEvent}. */
export interface ToCloudEventOptions {
  /**
   * What to do with an ext property whose name cannot become an extension (see
   * {@link extensionName}): `skip` leaves it out, `throw` throws a `ValidationError` naming it
   * (through an emitter, that is a failed send the caller sees in its `EmitResult`).
   * @default 'skip'
   */
  readonly onInvalidExtension?: 'skip' | 'throw'
}

/**
 * The extension name an ext property travels under: lower-cased, every character outside
 * `[a-z0-9]` dropped (`tenant_id` → `tenantid`, `Region` → `region`). Returns `undefined` when
 * nothing is left or the result is a CloudEvents context attribute or one Substate sets itself
 * (`id`, `source`, `type`, `subject`, `time`, `data`, `originid`, `propertyname`, ...): an ext
 * property never overrides the event's own attributes.
 *
 * @example extensionName('Tenant-ID') // 'tenantid'
 */
export function extensionName(name: string): string | undefined {
  const n = ATTRIBUTE_NAME.test(name) ? name : name.toLowerCase().replace(/[^a-z0-9]+/g, '')
  return n === '' || RESERVED.has(n) ? undefined : n
}

/**
 * An extension value in the CloudEvents type system: strings as they are, numbers and booleans in
 * their canonical string form, objects and arrays as JSON text. `null` means "no value".
 */
function extensionValue(value: JsonValue): string | undefined {
  if (value === null) return undefined
  if (typeof value === 'string') return value
  if (typeof value === 'number' || typeof value === 'boolean') return String(value)
  return JSON.stringify(value)
}

/**
 * Maps a Substate event (and its subject's ext properties) to a CloudEvent 1.0: `id`, `type`,
 * `source`, `subject`, `time` (RFC 3339), `specversion` `1.0`, `datacontenttype`
 * `application/json`, `data` (the payload, left out when `undefined`), and the extensions
 * `originid`, `propertyname` (property events), the extensions a received event arrived with, and
 * the ext properties (names through {@link extensionName}, values as strings; `null` values are
 * left out). When two ext properties map to one name, a property already named validly wins,
 * then the first in code-point order.
 *
 * @example
 * const ce = toCloudEvent(event, await subject.getExtProps())
 */
export function toCloudEvent(
  event: SubstateEvent,
  extProps?: Readonly<Record<string, JsonValue>>,
  { onInvalidExtension = 'skip' }: ToCloudEventOptions = {},
): CloudEvent {
  const ce: Record<string, unknown> = {
    specversion: '1.0',
    id: event.id,
    type: event.type,
    source: event.source,
    subject: event.subject,
    time: new Date(event.time).toISOString(),
    datacontenttype: MIME_JSON,
  }
  if (event.payload !== undefined) ce.data = event.payload
  if (event.extensions !== undefined) {
    for (const [k, v] of Object.entries(event.extensions))
      if (ATTRIBUTE_NAME.test(k) && !RESERVED.has(k)) ce[k] = v
  }
  if (extProps !== undefined) {
    const keys = Object.keys(extProps)
    if (keys.length > 0) {
      const taken = new Set<string>()
      // Valid names first, so `region` keeps its value when `Region` exists too.
      keys.sort(
        (a, b) =>
          Number(!ATTRIBUTE_NAME.test(a)) - Number(!ATTRIBUTE_NAME.test(b)) ||
          (a < b ? -1 : a > b ? 1 : 0),
      )
      for (const key of keys) {
        const name = extensionName(key)
        if (name === undefined || taken.has(name)) {
          if (onInvalidExtension === 'throw')
            throw new ValidationError(
              `extensions.${key}`,
              name === undefined
                ? `ext property "${key}" of ${event.subject} has no valid CloudEvents extension name (lower-case letters and digits, not a context attribute); rename it`
                : `ext property "${key}" of ${event.subject} maps to extension "${name}", already taken by another ext property; rename one`,
            )
          continue
        }
        taken.add(name)
        const value = extensionValue(extProps[key]!)
        if (value !== undefined) ce[name] = value
      }
    }
  }
  ce.originid = event.originId
  if (event.propertyName !== undefined) ce.propertyname = event.propertyName
  return ce as CloudEvent
}
