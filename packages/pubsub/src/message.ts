import type { IncomingEvent, JsonValue, SubstateEvent } from '@substate/core'
import { ValidationError } from '@substate/core'

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

// CloudEvents context attributes with a meaning of their own; everything else is an extension.
const CONTEXT = new Set([
  'id',
  'source',
  'type',
  'subject',
  'time',
  'specversion',
  'datacontenttype',
  'dataschema',
  'data',
  'originid',
  'propertyname',
])
// Attributes a KRules publisher writes that are not ext properties.
const KRULES_CONTEXT = new Set([...CONTEXT, 'ce-type', 'contentType', 'content-type'])

/** CloudEvents extension names are `[a-z0-9]`: lowercased, other characters dropped. */
const extensionName = (name: string): string => name.toLowerCase().replace(/[^a-z0-9]/g, '')

/** The canonical string of a CloudEvents attribute value; non-scalar values as JSON. */
const attributeValue = (value: JsonValue): string =>
  typeof value === 'string' ? value : JSON.stringify(value)

/**
 * Maps an event to a Pub/Sub message in the CloudEvents Pub/Sub binding, binary mode: context
 * attributes and extensions as `ce-` attributes, the payload as JSON in the data.
 */
export function toPubsubMessage(
  event: SubstateEvent,
  ext: Readonly<Record<string, JsonValue>>,
  { krules = false }: ToMessageOptions = {},
): OutgoingMessage {
  const attributes: Record<string, string> = {}
  for (const [name, value] of Object.entries(ext)) {
    const ce = extensionName(name)
    // An ext property may not shadow a context attribute (`id`, `type`, ...).
    if (ce !== '' && !CONTEXT.has(ce)) attributes[`ce-${ce}`] = attributeValue(value)
    if (krules && !KRULES_CONTEXT.has(name)) attributes[name] = attributeValue(value)
  }
  const time = new Date(event.time).toISOString()
  attributes['ce-specversion'] = '1.0'
  attributes['ce-id'] = event.id
  attributes['ce-source'] = event.source
  attributes['ce-type'] = event.type
  attributes['ce-subject'] = event.subject
  attributes['ce-time'] = time
  attributes['ce-originid'] = event.originId
  if (event.propertyName !== undefined) attributes['ce-propertyname'] = event.propertyName
  if (krules) {
    attributes.id = event.id
    attributes.source = event.source
    attributes.type = event.type
    attributes.subject = event.subject
    attributes.time = time
    attributes.originid = event.originId
    if (event.propertyName !== undefined) attributes.propertyname = event.propertyName
  }
  if (event.payload === undefined) return { data: Buffer.alloc(0), attributes }
  attributes['Content-Type'] = 'application/json'
  if (krules) attributes.datacontenttype = 'application/json'
  return { data: Buffer.from(JSON.stringify(event.payload)), attributes }
}

/**
 * Reads a Pub/Sub message as an incoming event. Understands the CloudEvents Pub/Sub binding
 * (binary mode, `ce-` attributes; structured mode, `Content-Type: application/cloudevents+json`)
 * and the unprefixed attributes a Python KRules publisher writes. Throws a `ValidationError`
 * naming the attribute when the message is not an event (no type or subject, bad time, data that
 * is not the JSON it claims to be).
 *
 * @param fallbackSource the `source` of messages that carry none (KRules messages from other
 *   publishers): the subscription's path.
 */
export function fromPubsubMessage(message: ReceivedMessage, fallbackSource: string): IncomingEvent {
  const attrs = message.attributes
  let contentType: string | undefined
  for (const key in attrs) if (key.toLowerCase() === 'content-type') contentType = attrs[key]
  if (contentType?.toLowerCase().startsWith('application/cloudevents+json'))
    return fromStructured(message)
  if (attrs['ce-id'] !== undefined || attrs['ce-specversion'] !== undefined)
    return fromBinding(message, contentType)
  return fromKrules(message, fallbackSource, contentType)
}

function fromBinding(message: ReceivedMessage, contentType: string | undefined): IncomingEvent {
  const ce: Record<string, string> = {}
  for (const [key, value] of Object.entries(message.attributes)) {
    if (key.length > 3 && key.slice(0, 3).toLowerCase() === 'ce-')
      ce[key.slice(3).toLowerCase()] = value
  }
  return build(message, ce, {
    field: (name) => `ce-${name}`,
    contentType: contentType ?? ce.datacontenttype,
    extensions: Object.entries(ce).filter(([k]) => !CONTEXT.has(k)),
  })
}

function fromKrules(
  message: ReceivedMessage,
  fallbackSource: string,
  contentType: string | undefined,
): IncomingEvent {
  const a = message.attributes
  const ce: Record<string, string | undefined> = {
    id: a.id ?? message.id,
    source: a.source ?? fallbackSource,
    // KRules' publisher writes `ce-type` beside `type`; its subscriber defaults plain messages.
    type: a.type ?? a['ce-type'] ?? 'google.cloud.pubsub.message.v1',
    subject: a.subject,
    time: a.time,
    originid: a.originid,
    propertyname: a.propertyname,
  }
  return build(message, ce, {
    field: (name) => name,
    contentType: a.datacontenttype ?? a.contentType ?? contentType,
    extensions: Object.entries(a).filter(([k]) => !KRULES_CONTEXT.has(k)),
  })
}

function fromStructured(message: ReceivedMessage): IncomingEvent {
  let body: unknown
  try {
    body = JSON.parse(message.data.toString('utf8'))
  } catch (e) {
    throw new ValidationError(
      'data',
      `a structured CloudEvent must be JSON: ${(e as Error).message}`,
    )
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw new ValidationError('data', 'a structured CloudEvent must be a JSON object')
  const ce: Record<string, string> = {}
  const extensions: [string, string][] = []
  const fields = body as Record<string, unknown>
  for (const [key, value] of Object.entries(fields)) {
    if (key === 'data' || key === 'data_base64') continue
    const text = typeof value === 'string' ? value : JSON.stringify(value)
    ce[key] = text
    if (!CONTEXT.has(key)) extensions.push([key, text])
  }
  const data =
    typeof fields.data_base64 === 'string'
      ? Buffer.from(fields.data_base64, 'base64')
      : fields.data === undefined
        ? Buffer.alloc(0)
        : Buffer.from(JSON.stringify(fields.data))
  return build({ ...message, data }, ce, {
    field: (name) => name,
    contentType: typeof fields.data_base64 === 'string' ? ce.datacontenttype : 'application/json',
    extensions,
  })
}

function build(
  message: ReceivedMessage,
  ce: Readonly<Record<string, string | undefined>>,
  opts: {
    field: (name: string) => string
    contentType: string | undefined
    extensions: [string, string][]
  },
): IncomingEvent {
  const required = (name: string): string => {
    const v = ce[name]
    if (v === undefined || v === '') throw new ValidationError(opts.field(name), 'missing')
    return v
  }
  let time = message.publishTime === undefined ? undefined : Number(message.publishTime.valueOf())
  if (ce.time !== undefined) {
    time = Date.parse(ce.time)
    if (Number.isNaN(time))
      throw new ValidationError(opts.field('time'), `not a timestamp: ${ce.time}`)
  }
  const event: {
    -readonly [K in keyof IncomingEvent]: IncomingEvent[K]
  } = {
    id: required('id'),
    source: required('source'),
    type: required('type'),
    subject: required('subject'),
    payload: payloadOf(message.data, opts.contentType),
  }
  if (time !== undefined && !Number.isNaN(time)) event.time = time
  if (ce.originid) event.originId = ce.originid
  if (ce.propertyname) event.propertyName = ce.propertyname
  if (opts.extensions.length > 0) event.extensions = Object.fromEntries(opts.extensions)
  return event
}

/**
 * JSON data (declared JSON, or undeclared) is parsed; `text/*` becomes a string; other media types
 * a base64 string. Empty data is no payload.
 */
function payloadOf(data: Buffer, contentType: string | undefined): unknown {
  if (data.length === 0) return undefined
  const type = contentType?.toLowerCase()
  if (type === undefined || /[/+]json(;|$)/.test(type) || type.startsWith('text/json')) {
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
