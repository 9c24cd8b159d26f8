/**
 * A write-through write commits the property's pending cached write with it; writes made while
 * that commit is in flight apply once, on top of what it stored (none is applied twice or lost).
 */
import { createContainer, createMemoryStorage, type SubjectStorage } from '@substate/core'
import { describe, expect, it } from 'vitest'

/** Memory storage whose next commit fails once `failNext` is set. */
function failingOnce(): SubjectStorage & { failNext: boolean } {
  const inner = createMemoryStorage()
  const s = Object.assign(Object.create(inner) as SubjectStorage, { failNext: false })
  s.commit = (subject, changes, options) => {
    if (s.failNext) {
      s.failNext = false
      return Promise.reject(new Error('connection reset'))
    }
    return inner.commit(subject, changes, options)
  }
  return s
}

describe('write-through with cached writes of the same property around it', () => {
  it('applies every updater once: pending before, write-through, cached during the commit', async () => {
    const storage = createMemoryStorage()
    const container = createContainer({ storage })
    const s = container.subject('counter:1')
    await s.set('n', 0)
    await s.store()
    await s.set('n', (n: number) => n + 1) // cached, pending
    const through = s.set('n', (n: number) => n + 10, { cache: false }) // takes the +1 with it
    const during = s.set('n', (n: number) => n + 100) // cached while the commit is in flight
    await Promise.all([through, during])
    expect(await s.get('n')).toBe(111)
    await s.store()
    expect((await storage.get('counter:1', 'prop', 'n'))?.value).toBe(111)
    await container.close()
  })

  it('keeps the pending write, in front of later ones, when the write-through commit fails', async () => {
    const storage = failingOnce()
    const container = createContainer({ storage })
    const s = container.subject('counter:2')
    await s.set('n', 0)
    await s.store()
    await s.set('n', (n: number) => n + 1)
    storage.failNext = true
    const through = s.set('n', (n: number) => n + 10, { cache: false })
    const during = s.set('n', (n: number) => n * 2) // order matters: (0 + 1) * 2
    await expect(through).rejects.toThrow('connection reset')
    await during
    await s.store()
    expect((await storage.get('counter:2', 'prop', 'n'))?.value).toBe(2)
    expect(await s.get('n')).toBe(2)
    await container.close()
  })
})
