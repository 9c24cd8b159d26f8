/**
 * The rules every worker runs. A page view increments the page's counter; every 100th view emits
 * a milestone, handled in the same unit of work (so it is stored with the count or not at all).
 */
import type { Container } from '@substate/core'

export interface PageViewed {
  readonly user?: string
}

export function clusterRules(container: Container, log: (line: string) => void): void {
  const { on, emit } = container.handlers()

  on('page.viewed', async (ctx) => {
    const views = await ctx.subject.set('views', (n = 0) => n + 1)
    const { user } = (ctx.payload ?? {}) as PageViewed
    if (user !== undefined) await ctx.subject.set('lastViewer', user)
    if (views % 100 === 0) await emit('page.milestone', ctx.subject, { views })
  })

  on('page.milestone', async (ctx) => {
    const { views } = ctx.payload as { views: number }
    await ctx.subject.set('milestone', views)
    log(`${ctx.subject.name} reached ${views} views`)
  })
}
