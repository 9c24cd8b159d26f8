/**
 * The device-health service: the rules of `rules.ts` behind the Substate HTTP receiver.
 */
import type { AddressInfo } from 'node:net'
import { serve } from '@hono/node-server'
import {
  type CloseReport,
  type Container,
  createContainer,
  createMemoryStorage,
  type SubjectStorage,
} from '@substate/core'
import { createInspector, createReceiver } from '@substate/hono'
import { deviceHealthRules } from './rules.js'

/** The subject `/readyz` reads to check the storage (never written). */
const READYZ_SUBJECT = 'device-health:readyz'

/** Options of {@link startDeviceHealth}. */
export interface DeviceHealthOptions {
  /** @default 8080 (0 picks a free port) */
  readonly port?: number
  /** @default '127.0.0.1' */
  readonly hostname?: string
  /** @default in-memory */
  readonly storage?: SubjectStorage
  /** Receives one line per reaction. @default console.log */
  readonly log?: (line: string) => void
}

/** A running service. */
export interface DeviceHealthService {
  readonly url: string
  readonly container: Container
  /**
   * Graceful drain: stops intake (503), finishes in-flight events, stores, closes storage, then
   * closes the server and its keep-alive connections (without waiting for their idle timeout).
   * Resolves with what the container drained.
   */
  close(): Promise<CloseReport>
}

export async function startDeviceHealth({
  port = 8080,
  hostname = '127.0.0.1',
  storage,
  log = console.log,
}: DeviceHealthOptions = {}): Promise<DeviceHealthService> {
  const store = storage ?? createMemoryStorage()
  const container = createContainer({ source: 'device-health', storage: store })
  deviceHealthRules(container, log)
  // /readyz also says whether the storage answers: a read of a subject nobody writes is a real
  // round trip (Redis fails at once while it is known to be down; PostgreSQL within the timeout).
  const app = createReceiver(container, {
    readiness: storage ? { storage: () => storage.load(READYZ_SUBJECT).then(() => true) } : {},
  })
  // The read-only inspector page; this service listens on loopback: put your own auth in front
  // (app.use('/inspector/*', ...)) before serving it anywhere else.
  app.route('/inspector', createInspector(container, { subjects: store.subjects.bind(store) }))
  const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, port, hostname }, () => resolve(s))
    s.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        e.code === 'EADDRINUSE'
          ? new Error(`port ${port} on ${hostname} is in use: set PORT to another one`, {
              cause: e,
            })
          : e,
      ),
    )
  })
  const { port: bound } = server.address() as AddressInfo
  return {
    url: `http://${hostname}:${bound}`,
    container,
    async close() {
      const report = await container.close()
      // Every answer went out during the drain: idle keep-alive connections would otherwise keep
      // `server.close()` waiting for their timeout (5 s). Connections still busy (an SSE stream
      // the container just ended) get a moment to finish, then are closed too.
      const http = server as { closeIdleConnections?(): void; closeAllConnections?(): void }
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      http.closeIdleConnections?.()
      const force = setTimeout(() => http.closeAllConnections?.(), 1_000)
      await closed
      clearTimeout(force)
      return report
    },
  }
}
