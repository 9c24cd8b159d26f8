/**
 * CloudEvents 1.0 for Substate: the mapping between Substate events and CloudEvents, a validating
 * parser for the HTTP binding (binary, structured and batch modes), and an HTTP emitter for
 * outbound routes.
 *
 * @example
 * import { createContainer } from '@substate/core'
 * import { httpEmitter } from '@substate/cloudevents'
 *
 * const container = createContainer({
 *   source: 'sensors',
 *   targets: { dispatchUrl: (url) => httpEmitter({ url }) },
 * })
 * // events of these types go to the other service only ('both' keeps local handlers too)
 * container.route('device.alert.*', httpEmitter({ url: 'http://127.0.0.1:8080/' }), { policy: 'direct' })
 * await container.emit('device.alert.critical', 'device:1', { level: 3 })
 * @module
 */

export { fromCloudEvent } from './from-cloud-event.js'
export type { HttpEmitterOptions } from './http-emitter.js'
export { httpEmitter } from './http-emitter.js'
export type { HeadersLike, HttpMessage, HttpMode, ParseResult } from './parse-http-message.js'
export { parseHttpMessage } from './parse-http-message.js'
export type { CloudEvent, ToCloudEventOptions } from './to-cloud-event.js'
export { extensionName, toCloudEvent } from './to-cloud-event.js'
export type { OutgoingHttpMessage } from './to-http-message.js'
export { toHttpMessage } from './to-http-message.js'
