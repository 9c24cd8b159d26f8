import type { IncomingMessage } from 'node:http'
import type { Context } from 'hono'

/** Returned by {@link readBody} when the body is larger than the limit. */
export const TOO_LARGE: unique symbol = Symbol('too large')

/** A request body and the headers it came with. */
export interface Body {
  readonly bytes: Uint8Array
  /** Node's headers object on the Node fast path, the Fetch `Headers` otherwise. */
  readonly headers: Headers | IncomingMessage['headers']
}

const EMPTY = new Uint8Array(0)

/**
 * Reads a request body. A `Content-Length` over `limit` is refused before reading; bytes are
 * counted as they arrive, so a chunked body (no `Content-Length`) or one longer than it declared
 * stops at the first chunk past `limit` instead of filling memory.
 *
 * Under `@hono/node-server` it reads the Node request (`c.env.incoming`) directly when nothing has
 * read it yet: the Web `Request` body there is a `ReadableStream` adapted from the Node stream,
 * which costs about as much per small request as validating and handling the event. Elsewhere
 * (Bun, Deno, `app.request`, or a body another middleware already read) it uses the Fetch API.
 */
export function readBody(c: Context, limit: number): Promise<Body | typeof TOO_LARGE> {
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming
  if (
    incoming !== undefined &&
    typeof incoming.on === 'function' &&
    incoming.readable &&
    !incoming.readableDidRead &&
    Object.keys(c.req.bodyCache).length === 0
  ) {
    if (Number(incoming.headers['content-length']) > limit) return Promise.resolve(TOO_LARGE)
    return readNode(incoming, limit)
  }
  return readFetch(c, limit)
}

/** {@link readBody} through the Fetch API. */
async function readFetch(c: Context, limit: number): Promise<Body | typeof TOO_LARGE> {
  const headers = c.req.raw.headers
  if (Number(headers.get('content-length')) > limit) return TOO_LARGE
  if (Object.keys(c.req.bodyCache).length > 0 || c.req.raw.bodyUsed) {
    // Read before us (by a validator, say): take Hono's cached copy.
    const bytes = new Uint8Array(await c.req.arrayBuffer())
    return bytes.byteLength > limit ? TOO_LARGE : { bytes, headers }
  }
  const bytes = await readWeb(c.req.raw, limit)
  return bytes === TOO_LARGE ? bytes : { bytes, headers }
}

async function readWeb(req: Request, limit: number): Promise<Uint8Array | typeof TOO_LARGE> {
  const body = req.body
  if (body === null) return EMPTY
  const reader = body.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    size += value.byteLength
    if (size > limit) {
      await reader.cancel().catch(() => {})
      return TOO_LARGE
    }
    chunks.push(value)
  }
  if (chunks.length === 1) return chunks[0]!
  return chunks.length === 0 ? EMPTY : Buffer.concat(chunks, size)
}

/** Reads the Node request: one promise, settled by the stream's events. */
function readNode(incoming: IncomingMessage, limit: number): Promise<Body | typeof TOO_LARGE> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const done = (): void => {
      incoming.off('data', onData)
      incoming.off('end', onEnd)
      incoming.off('error', onError)
      incoming.off('close', onClose)
    }
    const onData = (chunk: Buffer): void => {
      size += chunk.length
      if (size <= limit) return void chunks.push(chunk)
      done()
      // Pause, do not destroy: the 413 still has to go out on this socket. The server drains
      // (or closes) the rest of the upload once the response is sent.
      incoming.pause()
      resolve(TOO_LARGE)
    }
    const onEnd = (): void => {
      done()
      const bytes =
        chunks.length === 1 ? chunks[0]! : chunks.length === 0 ? EMPTY : Buffer.concat(chunks, size)
      resolve({ bytes, headers: incoming.headers })
    }
    const onError = (e: Error): void => {
      done()
      reject(e)
    }
    const onClose = (): void => {
      done()
      reject(new Error('the client closed the connection before the request body ended'))
    }
    incoming.on('data', onData)
    incoming.on('end', onEnd)
    incoming.on('error', onError)
    incoming.on('close', onClose)
  })
}
