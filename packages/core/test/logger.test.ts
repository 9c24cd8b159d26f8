import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  createContainer,
  createMemoryStorage,
  type Logger,
  type OutboundEmitter,
} from '../src/index.js'

/** A pino-style logger that records its calls. */
function recordingLogger() {
  const calls: Array<{ level: string; obj: Record<string, unknown>; msg: string | undefined }> = []
  const at =
    (level: string) =>
    (obj: Record<string, unknown>, msg?: string): void => {
      calls.push({ level, obj, msg })
    }
  const logger: Logger = {
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
  }
  return { logger, calls }
}

afterEach(() => vi.restoreAllMocks())

describe('logger', () => {
  it('logs a failing handler with event id, type, subject, origin id and the error with its stack', async () => {
    const { logger, calls } = recordingLogger()
    const c = createContainer({ logger })
    c.on('order.created', async function chargeCard() {
      throw new Error('card declined')
    })
    const r = await c.receive({
      id: 'e-1',
      source: 'shop',
      type: 'order.created',
      subject: 'order:1',
      originId: 'o-9',
    })
    expect(r.status).toBe('failed')
    const errors = calls.filter((l) => l.level === 'error')
    expect(errors).toHaveLength(1)
    const { obj, msg } = errors[0]!
    expect(obj).toMatchObject({
      eventId: 'e-1',
      eventType: 'order.created',
      subject: 'order:1',
      source: 'shop',
      originId: 'o-9',
      handler: 'chargeCard',
      attempts: 1,
    })
    expect(obj.err).toBeInstanceOf(Error)
    expect((obj.err as Error).message).toBe('card declined')
    expect((obj.err as Error).stack).toContain('logger.test.ts')
    expect(msg).toContain('chargeCard')
    await c.close()
  })

  it('logs through a logger whose methods need their `this` (like pino)', async () => {
    const lines: string[] = []
    const pinoLike = {
      prefix: 'svc',
      error(this: { prefix: string }, obj: object, msg?: string) {
        lines.push(`${this.prefix}:${msg}:${JSON.stringify(Object.keys(obj))}`)
      },
      warn() {},
      info() {},
      debug() {},
    }
    const c = createContainer({ logger: pinoLike })
    c.on('x', () => {
      throw new Error('boom')
    })
    await c.emit('x', 's')
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/^svc:.*boom/)
    await c.close()
  })

  it('rejects a logger that is not pino-style', () => {
    expect(() => createContainer({ logger: { error() {} } as unknown as Logger })).toThrow(
      /pino-style/,
    )
  })

  it('without a logger or hooks prints ids and the stack to the console', async () => {
    const printed: unknown[][] = []
    vi.spyOn(console, 'error').mockImplementation((...args: unknown[]) => {
      printed.push(args)
    })
    const c = createContainer()
    c.on('x', async () => {
      throw new Error('kaput')
    })
    await c.emit('x', 'dev:1')
    expect(printed).toHaveLength(1)
    const [line, err] = printed[0]!
    expect(line).toMatch(/eventId="[^"]+"/)
    expect(line).toContain('eventType="x"')
    expect(line).toContain('subject="dev:1"')
    expect(line).toMatch(/originId="[^"]+"/)
    expect((err as Error).stack).toContain('kaput')
    await c.close()
  })

  it('with an onError hook and no logger, the hook takes the failure (nothing printed)', async () => {
    const spy = vi.spyOn(console, 'error').mockImplementation(() => {})
    const c = createContainer()
    const seen: string[] = []
    c.onError((f) => seen.push(f.handler))
    c.on('x', async function h() {
      throw new Error('no')
    })
    await c.emit('x', 's')
    expect(seen).toEqual(['h'])
    expect(spy).not.toHaveBeenCalled()
    await c.close()
  })

  it('warns about an undelivered send and reports the drain on close', async () => {
    const { logger, calls } = recordingLogger()
    const c = createContainer({ logger })
    const down: OutboundEmitter = {
      name: 'down',
      send: async () => {
        throw new Error('connection refused')
      },
    }
    c.route('order.*', down)
    const r = await c.receive({ id: 'e-2', source: 'shop', type: 'order.paid', subject: 'order:2' })
    expect(r.status).toBe('handled')
    const report = await c.close()
    const warn = calls.find((l) => l.level === 'warn' && l.obj.handler === 'route:down')
    expect(warn?.obj).toMatchObject({ eventId: 'e-2', eventType: 'order.paid', subject: 'order:2' })
    expect((warn!.obj.err as Error).message).toBe('connection refused')
    const closed = calls.find((l) => l.level === 'info' && l.msg === 'container closed')
    expect(closed?.obj).toMatchObject({
      drained: report.drained,
      stored: report.stored,
      timedOut: false,
      errors: 0,
      outbox: report.outbox,
    })
  })

  it('warns when a unit of work gives up after conflicts (conflictTimeout), and counts the re-run', async () => {
    const { logger, calls } = recordingLogger()
    const storage = createMemoryStorage()
    const c = createContainer({ logger, storage, conflictTimeout: 0 })
    c.onError(() => {})
    c.on('count', async (ctx) => {
      const n = await ctx.subject.get<number>('n', { default: 0 })
      // Another process writes what this unit read before it commits.
      await storage.commit('counter:1', [{ op: 'set', kind: 'prop', name: 'n', value: n + 100 }])
      await ctx.subject.set('n', n + 1)
    })
    const r = await c.receive({ id: 'c-1', source: 't', type: 'count', subject: 'counter:1' })
    expect(r.status).toBe('failed')
    expect(r.error?.name).toBe('ConflictError')
    const warn = calls.find((l) => l.level === 'warn' && l.obj.eventId === 'c-1')
    expect(warn?.obj).toMatchObject({ eventType: 'count', subject: 'counter:1', attempts: 1 })
    expect(warn!.obj.err).toBe(r.error)
    expect((await c.metrics.collect()).conflicts).toBe(1)
    await c.close()
  })
})
