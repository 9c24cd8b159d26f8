import type { SubjectStorage } from '../storage.js'
import { describeChangeSets, describeKeysListingAndCopies } from './describe-storage-basics.js'
import { describeConcurrency, describeSustainedContention } from './describe-storage-concurrency.js'
import { describeOwnConnection, describeUnreachable } from './describe-storage-connections.js'
import { afterAll, describe, type StorageSuite } from './describe-storage-kit.js'
import { describeUnits } from './describe-storage-units.js'
import type { StorageFactory } from './storage-factory.js'

/**
 * The storage conformance suite: every adapter runs it against its real backend.
 *
 * @example
 * describeStorage('redis', { create: (ns) => createRedisStorage({ client, prefix: `${ns}:` }) })
 */
export function describeStorage(name: string, factory: StorageFactory): void {
  describe(`storage conformance: ${name}`, () => {
    const open: SubjectStorage[] = []
    const make = async (ns: string): Promise<SubjectStorage> => {
      const s = await factory.create(ns)
      open.push(s)
      return s
    }

    /** A storage of `ns` on a connection of its own when the factory can make one. */
    const independent = async (ns: string): Promise<SubjectStorage> => {
      if (!factory.createIndependent) return make(ns)
      const s = await factory.createIndependent(ns)
      open.push(s)
      return s
    }
    const suite: StorageSuite = { factory, make, independent }

    // Called in this interleaved order so the tests keep the order they have always run in.
    describeChangeSets(suite)
    describeConcurrency(suite)
    describeOwnConnection(suite)
    describeKeysListingAndCopies(suite)
    describeUnreachable(suite)
    describeSustainedContention(suite)
    describeUnits(suite)

    afterAll(async () => {
      for (const s of open.splice(0)) await s.close()
      await factory.cleanup?.()
    })
  })
}
