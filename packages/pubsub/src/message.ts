import { fromCloudEvent, toCloudEvent } from '@substate/cloudevents'
import type { IncomingEvent, JsonValue, SubstateEvent } from '@substate/core'
import { isSubstateError, ValidationError } from '@substate/core'

/** A Pub/Sub message as published: data bytes and string attributes. */
export interface OutgoingMessage {
  readonly data: Buffer
  readonly attributes: Record<string, string>
}

/** The parts of a received Pub/Sub message the mapping reads. */
export interface ReceivedMessage {
  readonly id: string
  readonly data: Buffer
  readonly attributes: Readonly<Record<string, string>>
  /** When Pub/Sub accepted the message (fallback for `time`). */
  readonly publishTime?: { valueOf(): number } | undefined
}

/** Options of {@link toPubsubMessage}. */
export interface ToMessageOptions {
  /**
   * Also write KRules' unprefixed attributes (`type`, `subject`, `source`, `id`, `time`,
   * `originid`, `propertyname` and the ext properties under their own names), so that a Python
   * KRules `PubSubSubscriber` understands the message.
   * @default false
   */
  readonly krules?: boolean
}

// Attributes a KRules publisher writes that are not ext properties.
const KRULES_CONTEXT = new Set([
  'id',
  'source',
  'type',
  'subject',
  'time',
  'specversion',
  'datacontenttype',
  'dataschema',
  'originid',
  'propertyname',
  'ce-type',
  'contentType',
  'content-type',
])

/**
 * Maps an event to a Pub/Sub message in the CloudEvents Pub/Sub binding, binary mode: the
 * attributes of `toCloudEvent` (from `@substate/cloudevents`: ext property names normalised,
 * `originid`, `propertyname`) as `ce-` attributes, `Content-Type` for `datacontenttype`, and the
 * payload as JSON in the data.
 */
export function toPubsubMessage(
  event: SubstateEvent,
  ext: Readonly<Record<string, JsonValue>>,
  { krules = false }: ToMessageOptions = {},
): OutgoingMessage {
  const ce = toCloudEvent(event, ext) as Record<string, unknown>
  const attributes: Record<string, string> = {}
  for (const name in ce) {
    if (name === 'data' || name === 'datacontenttype') continue
    const value = ce[name]
    if (value !== undefined) attributes[prefixed(name)] = String(value)
  }
  if (krules) {
    for (const name in ext) {
      const value = ext[name]
      if (!KRULES_CONTEXT.has(name) && value !== null && value !== undefined)
        attributes[name] = typeof value === 'string' ? value : JSON.stringify(value)
    }
    for (const name of ['id', 'source', 'type', 'subject', 'time', 'originid', 'propertyname'])
      if (ce[name] !== undefined) attributes[name] = String(ce[name])
  }
  if (ce.data === undefined) return { data: EMPTY, attributes }
  const contentType = (ce.datacontenttype as string | undefined) ?? 'application/json'
  attributes['Content-Type'] = contentType
  if (krules) attributes.datacontenttype = contentType
  return { data: Buffer.from(JSON.stringify(ce.data)), attributes }
}

const EMPTY = Buffer.alloc(0)
// `ce-` names of the usual attributes, made once: a new key string per message costs more than
// the lookup (publishing is CPU-bound on the client at high rates).
const PREFIXED = new Map<string, string>()
const prefixed = (name: string): string => {
  let p = PREFIXED.get(name)
  if (p === undefined) {
    p = `ce-${name}`
    if (PREFIXED.size < 1000) PREFIXED.set(name, p)
  }
  return p
}

/**
 * Reads a Pub/Sub message as an incoming event. Understands the CloudEvents Pub/Sub binding in
 * binary mode (`ce-` attributes, validated by `fromCloudEvent` of `@substate/cloudevents`) and
 * structured mode (`Content-Type: application/cloudevents+json`), and the unprefixed attributes a
 * Python KRules publisher writes (`type`, `subject`, `id`, `source`, `time`, `originid`,
 * `propertyname`, the ext properties under their own names; `ce-type` and `contentType` ignored;
 * no `specversion` needed). Every path validates with `fromCloudEvent` and reads extension names
 * the same way: lower-cased, characters outside `[a-z0-9]` dropped (`tenant_id` → `tenantid`,
 * `tenantId` → `tenantid`); a name left empty, one that reads as a context attribute or one that
 * another attribute already reads as is rejected, never dropped. Throws a
 * `ValidationError` naming the attribute when the message is not an event (no type or subject, a
 * bad time, data that is not the JSON it claims to be).
 *
 * @param fallbackSource the `source` of messages that carry none (plain messages with KRules-style
 *   attributes): the subscription's path.
 */
export function fromPubsubMessage(message: ReceivedMessage, fallbackSource: string): IncomingEvent {
  const attrs = message.attributes
  let contentType: string | undefined
  // No prototype: `ce-__proto__` is an attribute like any other (and gets the same checks).
  const ce = Object.create(null) as Record<string, unknown>
  let binding = false
  for (const key in attrs) {
    const lower = key.toLowerCase()
    if (lower === 'content-type') contentType = attrs[key]
    else if (lower.startsWith('ce-') && lower.length > 3) {
      ce[lower.slice(3)] = attrs[key]
      if (lower === 'ce-id' || lower === 'ce-specversion') binding = true
    }
  }
  if (contentType?.toLowerCase().startsWith('application/cloudevents+json')) {
    let body: unknown
    try {
      body = JSON.parse(message.data.toString('utf8'))
    } catch (e) {
      throw new ValidationError('data', `not a structured CloudEvent: ${(e as Error).message}`)
    }
    return fromCloudEvent(body)
  }
  if (binding) {
    contentType ??= ce.datacontenttype as string | undefined
    if (contentType !== undefined) ce.datacontenttype = contentType
    ce.data = payloadOf(message.data, contentType)
    try {
      return fromCloudEvent(ce)
    } catch (e) {
      // Name the Pub/Sub attribute (`ce-subject`), not the CloudEvents one.
      if (!isSubstateError(e, 'VALIDATION')) throw e
      const field = (e as ValidationError).field
      const name = field === 'data' ? field : `ce-${field}`
      throw new ValidationError(name, e.message.slice(`invalid ${field}: `.length))
    }
  }
  return fromKrules(message, fallbackSource)
}

// Attributes of a KRules message that belong to Pub/Sub or repeat another one: not extensions.
const KRULES_TRANSPORT = new Set(['ce-type', 'contentType', 'content-type', 'Content-Type'])

/**
 * A KRules message: its unprefixed attributes are read as a structured CloudEvent by
 * `fromCloudEvent`, so they get the rules every other path gets (ext property names normalised,
 * `tenant_id` → `tenantid`; names that read as a context attribute rejected; `None` as absent).
 * KRules sends no `specversion` (pydantic drops the default).
 */
function fromKrules(message: ReceivedMessage, fallbackSource: string): IncomingEvent {
  const a = message.attributes
  // No prototype: an attribute named `__proto__` is checked like any other.
  const ce = Object.create(null) as Record<string, unknown>
  for (const key in a) {
    if (KRULES_TRANSPORT.has(key)) continue
    // The data is the message's: an attribute of that name would pass for it.
    if (key === 'data' || key === 'data_base64')
      throw new ValidationError(key, `invalid extension name "${key}": a context attribute`)
    ce[key] = a[key]
  }
  ce.specversion ??= '1.0'
  if (!ce.id) ce.id = message.id
  if (!ce.source) ce.source = fallbackSource
  // KRules' publisher writes `ce-type` beside `type`; its subscriber defaults plain messages.
  if (!ce.type) ce.type = a['ce-type'] || 'google.cloud.pubsub.message.v1'
  const published = message.publishTime?.valueOf()
  if (ce.time === undefined && published !== undefined && Number.isFinite(Number(published)))
    ce.time = new Date(Number(published)).toISOString()
  // Declared JSON goes through fromCloudEvent as `data_base64`, so it reads Python's bare
  // `NaN` / `Infinity` tokens as the HTTP path does.
  const declared = a.datacontenttype ?? a.contentType
  const json = message.data.length > 0 && declared !== undefined && isJson(declared)
  if (json) {
    ce.datacontenttype = declared
    ce.data_base64 = message.data.toString('base64')
  }
  let event: { -readonly [K in keyof IncomingEvent]: IncomingEvent[K] }
  try {
    event = fromCloudEvent(ce)
  } catch (e) {
    if (isSubstateError(e, 'VALIDATION') && (e as ValidationError).field === 'data_base64')
      throw new ValidationError('data', `declared ${declared} but is not JSON`)
    throw e
  }
  if (!json) {
    const payload = payloadOf(message.data, declared)
    if (payload !== undefined) event.payload = payload
  }
  return event
}

const isJson = (contentType: string): boolean => {
  const type = contentType.split(';')[0]!.trim().toLowerCase()
  return type === 'application/json' || type === 'text/json' || type.endsWith('+json')
}

/**
 * JSON data (declared JSON, or undeclared) is parsed; `text/*` becomes a string; other media types
 * a base64 string. Empty data is no payload.
 */
function payloadOf(data: Buffer, contentType: string | undefined): unknown {
  if (data.length === 0) return undefined
  const type =
    contentType === undefined ? undefined : contentType.split(';')[0]!.trim().toLowerCase()
  if (type === undefined || isJson(type)) {
    try {
      return JSON.parse(data.toString('utf8'))
    } catch (e) {
      if (type !== undefined)
        throw new ValidationError(
          'data',
          `declared ${contentType} but is not JSON: ${(e as Error).message}`,
        )
      return data.toString('utf8')
    }
  }
  if (type.startsWith('text/')) return data.toString('utf8')
  return data.toString('base64')
}
