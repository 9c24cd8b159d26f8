/**
 * A `@google-cloud/pubsub` client for the emulator found by the global setup.
 *
 * `universeDomain` is given so that the client does not ask the GCE metadata server for it: with
 * it, every connection the client makes goes to the emulator on the loopback address.
 * @module
 */
import { PubSub } from '@google-cloud/pubsub'
import { PUBSUB_PROJECT_ID } from './pubsub-emulator.js'
import { pubsubEmulatorHost } from './services.js'

/** A client for project `substate-test` on the emulator (`host:port`, default: the found one). */
export function createEmulatorClient(host: string | undefined = pubsubEmulatorHost): PubSub {
  if (host === undefined)
    throw new Error(
      "[tests] the Pub/Sub emulator is not available: use describeWith('pubsub', ...)",
    )
  return new PubSub({
    projectId: PUBSUB_PROJECT_ID,
    apiEndpoint: host,
    emulatorMode: true,
    universeDomain: 'googleapis.com',
  })
}
