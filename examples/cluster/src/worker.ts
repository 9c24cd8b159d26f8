/**
 * A worker: pulls from the shared subscription and handles each event in a unit of work on the
 * shared Redis storage, acknowledging it only once its subjects are stored. Run as many as you
 * like; Pub/Sub spreads the messages among them, ordering keys keep each subject on one at a time.
 */
import { createContainer } from '@substate/core'
import { pubsubSubscriber } from '@substate/pubsub'
import { createRedisStorage } from '@substate/storage-redis'
import { Redis } from 'ioredis'
import { config, pubsubClient } from './config.js'
import { clusterRules } from './rules.js'

const redis = new Redis(config.redisUrl)
const client = pubsubClient()
const container = createContainer({
  storage: createRedisStorage({ client: redis, prefix: config.prefix }),
  source: `cluster-worker-${process.pid}`,
})
const log = (line: string): void => console.log(`[worker ${process.pid}] ${line}`)
clusterRules(container, log)

// After the rules: messages can arrive at once.
const subscriber = pubsubSubscriber(container, {
  client,
  subscriptions: config.subscription,
  concurrency: 200,
})
log(`pulling from ${subscriber.subscriptions.join(', ')}`)
process.send?.({ ready: true })

const stats = setInterval(() => process.send?.({ stats: subscriber.stats() }), 500)

async function shutdown(): Promise<void> {
  clearInterval(stats)
  // Stops pulling, lets the messages in flight finish and be acked, stores what is dirty.
  const report = await container.close({ drainTimeout: 10_000 })
  log(`stopped: ${JSON.stringify(subscriber.stats())}, drained ${report.drained}`)
  await client.close()
  redis.disconnect()
  process.disconnect?.()
}
process.once('SIGTERM', () => void shutdown())
process.once('SIGINT', () => void shutdown())
