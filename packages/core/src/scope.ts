import { AsyncLocalStorage } from 'node:async_hooks'
import type { CommitOptions } from './storage.js'
import type { HandlerFailure } from './types.js'

/** What a unit of work needs of a subject it touched (a `SubjectState`, seen from here). */
export interface UnitMember {
  readonly name: string
  /** Commits the unit's pending writes (and those made outside units) of this subject. */
  store(options?: CommitOptions & { unit?: UnitOfWork }): Promise<void>
  /** Drops the pending writes of `unit` (a failed unit). */
  dropUnit(unit: UnitOfWork): void
}

/** Work that entered from outside: the subjects it touched are stored before it is acknowledged. */
export interface UnitOfWork {
  /** Subjects the unit wrote to (cached writes, tagged with the unit). */
  readonly touched: Set<UnitMember>
}

/** Drops what a failed unit cached (and only that), so a redelivery starts from storage. */
export function discardUnit(unit: UnitOfWork): void {
  for (const s of unit.touched) s.dropUnit(unit)
}

/**
 * The cascade an async call runs in: carried by AsyncLocalStorage through handlers, nested emits
 * and implicit property events, so that origin id, depth and failures follow the work.
 */
export interface Scope {
  readonly depth: number
  readonly originId: string
  /** Failures of this dispatch and its cascade; merged into the parent scope's on completion. */
  readonly failures: HandlerFailure[]
  readonly unit: UnitOfWork | undefined
}

export const scopes: AsyncLocalStorage<Scope> = new AsyncLocalStorage<Scope>()
