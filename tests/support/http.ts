/** Helpers for HTTP tests: a Hono app served on a real socket. */
import type { AddressInfo } from 'node:net'
import { serve } from '@hono/node-server'

/** Serves `fetch` on 127.0.0.1 at a free port; `close()` stops it and drops its connections. */
export async function listen(
  fetch: (req: Request) => Response | Promise<Response>,
): Promise<{ url: string; close(): Promise<void> }> {
  const server = await new Promise<ReturnType<typeof serve>>((resolve) => {
    const s = serve({ fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s))
  })
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        ;(server as { closeAllConnections?(): void }).closeAllConnections?.()
      }),
  }
}
