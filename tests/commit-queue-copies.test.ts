/**
 * The group-commit engine is kept as two identical copies, one per storage adapter (neither
 * adapter depends on the other, and core does not export it): this keeps them from drifting.
 */
import { readFileSync } from 'node:fs'
import { expect, it } from 'vitest'

const read = (pkg: string): string =>
  readFileSync(new URL(`../packages/${pkg}/src/commit-queue.ts`, import.meta.url), 'utf8')

it('storage-redis and storage-postgres hold the same commit-queue.ts', () => {
  expect(read('storage-postgres')).toBe(read('storage-redis'))
})
