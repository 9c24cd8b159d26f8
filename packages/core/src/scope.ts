import { AsyncLocalStorage } from 'node:async_hooks'
import type { SpanLike } from './telemetry.js'
import type { HandlerFailure } from './types.js'
import type { UnitState } from './unit-state.js'

/** The unit of work a cascade runs in (see `unit-state.ts`). */
export type UnitOfWork = UnitState

/**
 * The cascade an async call runs in: carried by AsyncLocalStorage through handlers, nested emits
 * and implicit property events, so that origin id, depth and failures follow the work.
 */
export interface Scope {
  readonly depth: number
  readonly originId: string
  /**
   * Failures of this dispatch and its cascade ({@link NO_FAILURES} until the first: most
   * dispatches have none, and this is allocated per event); merged into the parent scope's on
   * completion. Add with {@link addFailures}.
   */
  failures: readonly HandlerFailure[]
  readonly unit: UnitOfWork | undefined
  /**
   * With tracing on: the span nested work hangs under (the dispatch's span, the running
   * handler's while it runs, the unit's at a unit's root).
   */
  span?: SpanLike | undefined
}

export const scopes: AsyncLocalStorage<Scope> = new AsyncLocalStorage<Scope>()

/** The failures of a scope that has none: shared and frozen (never pushed to, replaced). */
export const NO_FAILURES: readonly HandlerFailure[] = Object.freeze([])

/** Adds failures to a scope's. */
export function addFailures(scope: Scope, failures: readonly HandlerFailure[]): void {
  if (scope.failures === NO_FAILURES) scope.failures = [...failures]
  else (scope.failures as HandlerFailure[]).push(...failures)
}
