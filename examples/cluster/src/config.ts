/**
 * Configuration of the cluster example, from the environment (the example reads `process.env`;
 * the packages never do). Defaults fit a laptop with Redis and the Pub/Sub emulator on 127.0.0.1.
 */
import { PubSub } from '@google-cloud/pubsub'

export interface ClusterConfig {
  readonly project: string
  readonly emulator: string | undefined
  readonly topic: string
  readonly subscription: string
  readonly redisUrl: string
  readonly prefix: string
  readonly port: number
  readonly workers: number
}

export const config: ClusterConfig = {
  /** Google Cloud project (any id on the emulator). */
  project: process.env.PUBSUB_PROJECT ?? 'substate-demo',
  /** `host:port` of the Pub/Sub emulator; unset to use real Pub/Sub (Application Default Credentials). */
  emulator: process.env.PUBSUB_EMULATOR_HOST,
  topic: process.env.TOPIC ?? 'substate-cluster',
  /** One subscription shared by every worker: Pub/Sub spreads the messages among them. */
  subscription: process.env.SUBSCRIPTION ?? 'substate-cluster-workers',
  redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
  /** Redis key prefix of the shared subject storage. */
  prefix: process.env.PREFIX ?? 'cluster:',
  port: Number(process.env.PORT ?? 8080),
  workers: Number(process.env.WORKERS ?? 3),
}

/** A Pub/Sub client: the emulator when `PUBSUB_EMULATOR_HOST` is set, else real Pub/Sub. */
export function pubsubClient(): PubSub {
  if (config.emulator === undefined) return new PubSub({ projectId: config.project })
  return new PubSub({
    projectId: config.project,
    apiEndpoint: config.emulator,
    emulatorMode: true,
    // Known up front, so the client does not ask the GCE metadata server.
    universeDomain: 'googleapis.com',
  })
}

/**
 * Creates the topic and the shared subscription when missing. The subscription has message
 * ordering enabled (events of one subject are handled in order, by one worker at a time) and a
 * short ack deadline, so the messages of a crashed worker come back quickly.
 */
export async function ensureTopology(client: PubSub): Promise<void> {
  const topic = client.topic(config.topic)
  const [topicExists] = await topic.exists()
  if (!topicExists) await topic.create()
  const subscription = topic.subscription(config.subscription)
  const [subscriptionExists] = await subscription.exists()
  if (!subscriptionExists)
    await subscription.create({ enableMessageOrdering: true, ackDeadlineSeconds: 10 })
}
