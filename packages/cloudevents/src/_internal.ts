/** Media types and attribute names of CloudEvents 1.0 and its HTTP binding, shared by this package. */

import { EXTENSION_NAME } from '@substate/core'

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

// Bare tokens Python's `json.dumps` writes for non-finite floats (not JSON).
const NON_FINITE: Readonly<Record<string, number>> = {
  NaN: Number.NaN,
  Infinity: Number.POSITIVE_INFINITY,
  '-Infinity': Number.NEGATIVE_INFINITY,
}

/**
 * `JSON.parse`, also accepting the bare `NaN`, `Infinity` and `-Infinity` tokens that Python's
 * `json.dumps` writes (KRules sends them): they are read as those numbers, as Python's
 * `json.loads` reads them. Anything else that is not JSON throws `JSON.parse`'s error. Valid JSON
 * takes the fast path; only text that fails it is scanned.
 */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch (e) {
    if (!text.includes('NaN') && !text.includes('Infinity')) throw e
    // Replace the tokens outside strings by marker strings, then map the markers back. The marker
    // is random, so no string a sender writes can pass for one.
    const marker = `\u0000${Math.random().toString(36).slice(2)}:`
    const escaped = JSON.stringify(marker).slice(1, -1)
    let out = ''
    let from = 0
    let replaced = false
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i)
      if (c === 0x22 /* " */) {
        for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++)
          if (text.charCodeAt(i) === 0x5c /* \ */) i++
        continue
      }
      const token = text.startsWith('-Infinity', i)
        ? '-Infinity'
        : text.startsWith('Infinity', i)
          ? 'Infinity'
          : text.startsWith('NaN', i)
            ? 'NaN'
            : undefined
      if (token === undefined) continue
      out += `${text.slice(from, i)}"${escaped}${token}"`
      i += token.length - 1
      from = i + 1
      replaced = true
    }
    if (!replaced) throw e
    let parsed: unknown
    try {
      parsed = JSON.parse(out + text.slice(from), (_key, value) =>
        typeof value === 'string' && value.startsWith(marker)
          ? NON_FINITE[value.slice(marker.length)]
          : value,
      )
    } catch {
      throw e
    }
    return parsed
  }
}

/**
 * The name an extension is received under: lower-cased, every character outside `[a-z0-9]`
 * dropped (KRules sends ext property names as they are: `ce-tenant_id` → `tenantid`,
 * `ce-region.code` → `regioncode`), the rule `extensionName()` applies to outbound ext properties.
 * An empty result stays empty (the caller rejects it).
 */
export function normaliseExtensionName(name: string): string {
  return EXTENSION_NAME.test(name) ? name : name.toLowerCase().replace(/[^a-z0-9]+/g, '')
}
