/** Middleware: wraps the dispatch of one event. Call `next()` at most once; skip it to short-circuit. */
export type Middleware<C> = (ctx: C, next: () => Promise<void>) => Promise<void> | void

/**
 * Chains middleware into one function, first registered outermost (an onion). `last` runs inside
 * the innermost middleware. Calling `next()` twice from one middleware throws.
 */
export function compose<C>(
  middleware: readonly Middleware<C>[],
  last: (ctx: C) => Promise<void>,
): (ctx: C) => Promise<void> {
  return (ctx) => {
    let index = -1
    const dispatch = async (i: number): Promise<void> => {
      if (i <= index) throw new Error('next() called multiple times')
      index = i
      if (i === middleware.length) return last(ctx)
      await middleware[i]!(ctx, () => dispatch(i + 1))
    }
    return dispatch(0)
  }
}
