/**
 * A Hono app for Substate: a CloudEvents receiver (binary, structured and batch modes) that
 * handles each event in a unit of work and answers only once it is stored, plus a subject API,
 * a Server-Sent Events stream, health checks and Prometheus metrics; and `createInspector`, an
 * opt-in read-only web page to watch subjects, events and cascades live.
 *
 * @example
 * import { serve } from '@hono/node-server'
 * import { createContainer } from '@substate/core'
 * import { createReceiver } from '@substate/hono'
 *
 * const container = createContainer({ source: 'device-health' })
 * container.on('device.reading', async (ctx) => {
 *   await ctx.subject.set('cpu', (ctx.payload as { cpu: number }).cpu)
 * })
 * const app = createReceiver(container)
 * serve({ fetch: app.fetch, port: 8080, hostname: '127.0.0.1' })
 * @module
 */

export type { InspectedEvent, InspectorOptions } from './inspector.js'
export { createInspector } from './inspector.js'
export type { ReceiverOptions, WebhookOptions } from './receiver.js'
export { createReceiver } from './receiver.js'
