import { createMemoryStorage, type SubjectStorage } from '@substate/core'
import { describeStorage } from '@substate/core/testing'

const byNamespace = new Map<string, SubjectStorage>()
describeStorage('memory', {
  create(ns) {
    const s = byNamespace.get(ns) ?? createMemoryStorage()
    byNamespace.set(ns, s)
    return s
  },
})
