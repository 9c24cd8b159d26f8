/**
 * The group-commit queue against backends that misbehave. (Its normal work, batching and
 * compare-and-set against real servers, is tested through the Redis and PostgreSQL adapters.)
 */
import { isSubstateError } from '@substate/core'
import {
  type BatchEntry,
  type CommitBackend,
  CommitQueue,
  retryPolicy,
  UnitQueue,
} from '@substate/core/storage-kit'
import { expect, it } from 'vitest'

const backend = (execute: CommitBackend['execute']): CommitBackend => ({
  storage: 'test-backend',
  execute,
  retryable: () => false,
  fail: (e) => (e instanceof Error ? e : new Error(String(e))),
  maxBatch: 16,
  concurrency: 1,
})
const policy = { maxAttempts: 3, retryDelay: 1 }
const set = (value: number) => [{ op: 'set' as const, kind: 'prop' as const, name: 'v', value }]

it('settles every commit when the backend answers a batch with too few outcomes', async () => {
  const queue = new CommitQueue(
    backend(async (batch: readonly BatchEntry[]) =>
      batch.slice(1).map(() => ({ status: 'applied' as const, old: [null] })),
    ),
  )
  let settled = 0
  const results = await Promise.allSettled(
    ['a', 'b', 'c'].map((s) => queue.commit(s, set(1), undefined, policy, true, () => settled++)),
  )
  expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'rejected'])
  const error = (results[2] as PromiseRejectedResult).reason
  expect(isSubstateError(error, 'STORAGE')).toBe(true)
  expect(error.message).toContain('2 outcomes for a batch of 3')
  expect(settled).toBe(3)
  // The subject's queue moved on: its next commit is sent.
  await expect(queue.commit('c', set(2), undefined, policy)).rejects.toThrow(/outcomes/)
})

it('rejects, and keeps going, when the backend throws instead of rejecting', async () => {
  let calls = 0
  const queue = new CommitQueue(
    backend((batch) => {
      if (calls++ === 0) throw new Error('thrown synchronously')
      return Promise.resolve(batch.map(() => ({ status: 'applied' as const, old: [null] })))
    }),
  )
  await expect(queue.commit('a', set(1), undefined, policy)).rejects.toThrow('thrown synchronously')
  const ok = await queue.commit('a', set(2), undefined, policy)
  expect(ok.changes).toEqual([{ kind: 'prop', name: 'v', oldValue: undefined, newValue: 2 }])
})

it('retries a lost compare-and-set until conflictTimeout, however many attempts that takes', async () => {
  let attempts = 0
  const queue = new CommitQueue(
    backend(async (batch) => {
      attempts++
      // Another writer always got there first.
      return batch.map(() => ({ status: 'conflict' as const, current: [String(attempts)] }))
    }),
  )
  const started = Date.now()
  const inc = [
    {
      op: 'update' as const,
      kind: 'prop' as const,
      name: 'v',
      update: (n: unknown) => (n as number) + 1,
    },
  ]
  const err = await queue
    .commit('a', inc, undefined, retryPolicy({ conflictTimeout: 150, retryDelay: 1 }))
    .catch((e: unknown) => e)
  expect(isSubstateError(err, 'CONFLICT')).toBe(true)
  expect(Date.now() - started).toBeGreaterThanOrEqual(150)
  expect(attempts).toBeGreaterThan(3)
  expect(retryPolicy({})).toEqual({
    maxAttempts: Number.POSITIVE_INFINITY,
    retryDelay: 2,
    conflictTimeout: 30_000,
  })
})

it('sends units committed together in one round trip, in order, each with its own result', async () => {
  const batches: string[][] = []
  const queue = new UnitQueue({
    storage: 'test-backend',
    maxBatch: 2,
    concurrency: 1,
    retryable: () => false,
    fail: (e) => (e instanceof Error ? e : new Error(String(e))),
    execute: async (units) => {
      batches.push(units.map((u) => u.key!))
      return units.map((u) =>
        u.key === 'bad' ? new Error('bad unit') : { status: 'applied' as const },
      )
    },
  })
  const results = await Promise.allSettled(
    ['a', 'b', 'bad', 'c'].map((key) => queue.commit({ key, entries: [] })),
  )
  expect(batches).toEqual([
    ['a', 'b'],
    ['bad', 'c'],
  ])
  expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled'])
})
