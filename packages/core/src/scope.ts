import { AsyncLocalStorage } from 'node:async_hooks'
import type { SubjectState } from './subject.js'
import type { HandlerFailure } from './types.js'

/** Work that entered from outside: the subjects it touched are stored before it is acknowledged. */
export interface UnitOfWork {
  /** Subjects the unit wrote to (cached writes, tagged with the unit). */
  readonly touched: Set<SubjectState>
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
