/** Returned by {@link readBody} when the body is larger than the limit. */
export const TOO_LARGE: unique symbol = Symbol('too large')

const EMPTY = new Uint8Array(0)

/**
 * Reads a request body, counting bytes as they stream in: a chunked body (no `Content-Length`) or
 * one longer than it declared stops at `limit + 1` bytes instead of filling memory.
 */
export async function readBody(
  req: Request,
  limit: number,
): Promise<Uint8Array | typeof TOO_LARGE> {
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
