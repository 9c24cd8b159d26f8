import { createMemoryStorage, type SubjectStorage } from '@substate/core'
import { describeStorage } from '@substate/core/testing'
import { expect, it } from 'vitest'

const byNamespace = new Map<string, SubjectStorage>()
describeStorage('memory', {
  create(ns) {
    const s = byNamespace.get(ns) ?? createMemoryStorage()
    byNamespace.set(ns, s)
    return s
  },
})

it('keeps idempotency keys apart that a NUL-joined key would confuse', async () => {
  const s = createMemoryStorage()
  const set = [{ op: 'set' as const, kind: 'prop' as const, name: 'v', value: 1 }]
  expect((await s.commit('a\u0000b', set, { idempotencyKey: 'c' })).duplicate).toBeUndefined()
  expect((await s.commit('a', set, { idempotencyKey: 'b\u0000c' })).duplicate).toBeUndefined()
  expect(await s.get('a', 'prop', 'v')).toEqual({ value: 1 })
  // A unit key is not a commit key of some subject either.
  const unit = await s.commitUnit!({ key: 'c', entries: [] })
  expect(unit).toEqual({ status: 'applied' })
  expect((await s.commit('u', set, { idempotencyKey: 'c' })).duplicate).toBeUndefined()
})
