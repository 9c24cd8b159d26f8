import type { PubSub } from '@google-cloud/pubsub'
import type { DeadLetter, DeadLetterSink, StoredDeadLetter } from '@substate/core'
import { DeliveryError, deadLetterId, decodeDeadLetter, encodeDeadLetter } from '@substate/core'

/** Options of {@link pubsubDeadLetters}. */
export interface PubsubDeadLettersOptions {
  /** The Pub/Sub client (`new PubSub({ projectId })`). Not closed by the sink. */
  readonly client: PubSub
  /** The dead-letter topic: a name in the client's project or a full `projects/p/topics/t`. */
  readonly topic: string
  /**
   * Milliseconds a publish may take before `put` rejects with a `DeliveryError` (the event is
   * then not acknowledged, and Pub/Sub or the HTTP sender redelivers it).
   * @default 30_000
   */
  readonly timeout?: number
}

/** The attribute marking a dead-letter message (its value: the entry's id). */
export const DEAD_LETTER_ATTRIBUTE = 'substate-dead-letter'

/**
 * A durable dead-letter sink publishing each entry to a Pub/Sub topic: the entry as JSON
 * (`encodeDeadLetter`) in the data, and attributes to filter on: `substate-dead-letter` (the
 * entry's id), `handler`, `ce-type`, `ce-subject`, `ce-source`, `ce-id`. A topic cannot be listed:
 * read the entries from a subscription with {@link readPubsubDeadLetter}, and hand them to
 * `redrive` with a sink that lists them, or to `container.receive` with `redrivenEvent(entry)`.
 *
 * @example
 * const client = new PubSub({ projectId: 'my-project' })
 * const container = createContainer({
 *   deadLetter: pubsubDeadLetters({ client, topic: 'billing-dead-letters' }),
 * })
 */
export function pubsubDeadLetters({
  client,
  topic,
  timeout = 30_000,
}: PubsubDeadLettersOptions): DeadLetterSink {
  if (typeof client?.topic !== 'function')
    throw new TypeError('pubsubDeadLetters(): client must be a PubSub client')
  if (typeof topic !== 'string' || topic === '')
    throw new TypeError('pubsubDeadLetters(): topic must be a non-empty string')
  if (!(timeout > 0))
    throw new TypeError(`pubsubDeadLetters(): timeout must be > 0 ms, got ${timeout}`)
  const t = client.topic(topic)
  return {
    durable: true,
    async put(entry: DeadLetter): Promise<void> {
      const { event } = entry
      const data = Buffer.from(JSON.stringify(encodeDeadLetter(entry)))
      const attributes = {
        [DEAD_LETTER_ATTRIBUTE]: deadLetterId(entry),
        handler: entry.handler,
        'ce-type': event.type,
        'ce-subject': event.subject,
        'ce-source': event.source,
        'ce-id': event.id,
      }
      let timer: NodeJS.Timeout | undefined
      try {
        await Promise.race([
          t.publishMessage({ data, attributes }),
          new Promise((_, reject) => {
            timer = setTimeout(
              () => reject(new Error(`no answer from Pub/Sub within ${timeout} ms (timeout)`)),
              timeout,
            )
          }),
        ])
      } catch (e) {
        throw new DeliveryError(
          'pubsub',
          `dead letter of ${event.type} for ${event.subject} (${entry.handler}) to ${t.name} failed: ${(e as Error)?.message ?? e}`,
          { cause: e },
        )
      } finally {
        clearTimeout(timer)
      }
    },
  }
}

/**
 * Reads a dead letter from a message of a dead-letter topic's subscription (its `data`, a
 * Buffer or a string). Throws a `TypeError` for a message that is not one.
 */
export function readPubsubDeadLetter(message: { data: Buffer | string }): StoredDeadLetter {
  const text = typeof message.data === 'string' ? message.data : message.data.toString('utf8')
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    throw new TypeError('readPubsubDeadLetter(): the message data is not JSON')
  }
  return decodeDeadLetter(json)
}
