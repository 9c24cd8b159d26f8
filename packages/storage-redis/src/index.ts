/**
 * Redis storage for Substate, in the KRules 3.x layout (a Python KRules service can share it).
 *
 * @example
 * import { Redis } from 'ioredis'
 * import { createContainer } from '@substate/core'
 * import { createRedisStorage } from '@substate/storage-redis'
 *
 * const client = new Redis('redis://127.0.0.1:6379')
 * const container = createContainer({ storage: createRedisStorage({ client, prefix: 'app:' }) })
 * await container.subject('device:1').set('count', (n = 0) => (n as number) + 1, { cache: false })
 * @module
 */

export type { RedisStorageOptions } from './redis-storage.js'
export { createRedisStorage } from './redis-storage.js'
