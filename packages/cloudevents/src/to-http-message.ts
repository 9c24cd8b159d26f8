import {
  encodeHeaderValue,
  isJsonMediaType,
  MIME_CE_JSON,
  MIME_JSON,
  mediaType,
} from './_internal.js'
import type { CloudEvent } from './to-cloud-event.js'

/** An HTTP message to send: headers (lower-case names) and body. */
export interface OutgoingHttpMessage {
  readonly headers: Record<string, string>
  readonly body: string | Uint8Array
}

/**
 * Writes a CloudEvent as an HTTP message (HTTP protocol binding §3). **binary**: attributes and
 * extensions as `ce-` headers (values percent-encoded per §3.1.3.2), `datacontenttype` as
 * `Content-Type`, data as the body (JSON text for JSON media types; `data_base64` as raw bytes).
 * **structured**: `Content-Type: application/cloudevents+json` and the event as JSON.
 *
 * @example
 * const { headers, body } = toHttpMessage(toCloudEvent(event), 'binary')
 * await fetch(url, { method: 'POST', headers, body })
 */
export function toHttpMessage(
  cloudEvent: CloudEvent,
  mode: 'binary' | 'structured',
): OutgoingHttpMessage {
  if (mode === 'structured')
    return {
      headers: { 'content-type': `${MIME_CE_JSON}; charset=utf-8` },
      body: JSON.stringify(cloudEvent),
    }
  const contentType = cloudEvent.datacontenttype ?? MIME_JSON
  const headers: Record<string, string> = { 'content-type': contentType }
  for (const key in cloudEvent) {
    if (key === 'data' || key === 'data_base64' || key === 'datacontenttype') continue
    const value = cloudEvent[key]
    if (value === undefined || value === null) continue
    headers[`ce-${key}`] = encodeHeaderValue(String(value))
  }
  const { data, data_base64 } = cloudEvent
  let body: string | Uint8Array = ''
  if (typeof data_base64 === 'string') body = Buffer.from(data_base64, 'base64')
  else if (data !== undefined)
    body =
      typeof data === 'string' && !isJsonMediaType(mediaType(contentType))
        ? data
        : data instanceof Uint8Array
          ? data
          : JSON.stringify(data)
  return { headers, body }
}
