/**
 * Test kit for Substate and its adapters.
 *
 * @example
 * import { describeStorage } from '@substate/core/testing'
 * describeStorage('memory', { create: () => createMemoryStorage() })
 * @module
 */

export type { OwnConnection, StorageFactory } from './describe-storage.js'
export { describeStorage } from './describe-storage.js'
