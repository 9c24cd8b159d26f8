/** Media types and attribute names of CloudEvents 1.0 and its HTTP binding, shared by this package. */

/** `application/cloudevents+json`: structured mode. */
export const MIME_CE_JSON = 'application/cloudevents+json'
/** `application/cloudevents-batch+json`: batch mode. */
export const MIME_CE_BATCH = 'application/cloudevents-batch+json'
export const MIME_JSON = 'application/json'

// Extension names: the rules live in core (route interceptors check them too).
export {
  EXTENSION_NAME as ATTRIBUTE_NAME,
  RESERVED_EXTENSIONS as RESERVED,
} from '@substate/core'

/** The media type of a `Content-Type` value: parameters dropped, lower-cased, trimmed. */
export function mediaType(contentType: string | null | undefined): string {
  if (!contentType) return ''
  const semi = contentType.indexOf(';')
  return (semi < 0 ? contentType : contentType.slice(0, semi)).trim().toLowerCase()
}

/** `application/json`, `text/json` and any `+json` suffix. */
export function isJsonMediaType(type: string): boolean {
  return type === MIME_JSON || type === 'text/json' || type.endsWith('+json')
}

// HTTP binding §3.1.3.2: header values percent-encode space, `"`, `%` and everything outside the
// printable ASCII range U+0021–U+007E (as UTF-8 octets).
const MUST_ENCODE = /[^\x21\x23\x24\x26-\x7e]/u

/** Encodes a string for a `ce-` header value (HTTP binding §3.1.3.2). */
export function encodeHeaderValue(value: string): string {
  if (!MUST_ENCODE.test(value)) return value
  let out = ''
  for (const ch of value) {
    if (!MUST_ENCODE.test(ch)) out += ch
    else {
      try {
        out += encodeURIComponent(ch)
      } catch {
        out += '%EF%BF%BD' // a lone surrogate: U+FFFD, as a UTF-8 encoder would write it
      }
    }
  }
  return out
}

/**
 * Decodes a `ce-` header value. A malformed escape keeps the value as sent: several SDKs (the
 * JavaScript one included) do not encode, so a literal `%` must not turn the event away.
 */
export function decodeHeaderValue(value: string): string {
  if (!value.includes('%')) return value
  try {
    return decodeURIComponent(value)
  } catch {
    return value
  }
}
