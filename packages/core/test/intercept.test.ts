import {
  createContainer,
  type Envelope,
  type OutboundEmitter,
  type OutboundMeta,
  type SubstateEvent,
} from '@substate/core'
import { expect, it } from 'vitest'

function recorder(): OutboundEmitter & {
  sent: Array<{ event: SubstateEvent; meta?: OutboundMeta }>
} {
  const sent: Array<{ event: SubstateEvent; meta?: OutboundMeta }> = []
  return {
    name: 'recorder',
    sent,
    async send(event, _subject, meta) {
      sent.push(meta === undefined ? { event } : { event, meta })
    },
  }
}

it('interceptors wrap each delivery of a route, first outermost, and may skip it', async () => {
  const c = createContainer()
  const out = recorder()
  const log: string[] = []
  c.route('job.*', out, {
    policy: 'direct',
    intercept: [
      async (env, next) => {
        log.push(`a:${env.event.type}`)
        env.extensions.traceid = 't-1'
        env.headers.authorization = 'Bearer x'
        await next()
        log.push('a:after')
      },
      (env, next) => (env.event.subject === 'job:private' ? undefined : next()),
    ],
  })
  expect((await c.emit('job.done', 'job:1', { ok: true })).ok).toBe(true)
  expect((await c.emit('job.done', 'job:private')).ok).toBe(true)
  expect(out.sent).toHaveLength(1)
  expect(out.sent[0]!.event.extensions).toEqual({ traceid: 't-1' })
  expect(out.sent[0]!.meta).toEqual({ headers: { authorization: 'Bearer x' } })
  expect(out.sent[0]!.event.payload).toEqual({ ok: true })
  expect(log).toEqual(['a:job.done', 'a:after', 'a:job.done', 'a:after'])

  // Without interceptors the emitter gets the event as it is, and no meta.
  const plain = recorder()
  c.route('plain.*', plain, { policy: 'direct' })
  await c.emit('plain.x', 's')
  expect(plain.sent[0]!.meta).toBeUndefined()
  expect(plain.sent[0]!.event.extensions).toBeUndefined()
  await c.close()
})

it('an interceptor that throws, or adds an invalid extension, fails the route; nothing is sent', async () => {
  const c = createContainer()
  c.onError(() => {})
  const out = recorder()
  c.route('a', out, {
    policy: 'direct',
    intercept: (env, next) => {
      env.extensions['Not-Valid'] = 1
      return next()
    },
  })
  c.route('b', out, {
    policy: 'direct',
    intercept: () => {
      throw new Error('no token')
    },
  })
  const a = await c.emit('a', 's')
  expect(a.ok).toBe(false)
  expect(a.failures[0]!.handler).toBe('route:recorder')
  expect(String((a.failures[0]!.error as Error).cause)).toMatch(/lower-case letters and digits/)
  const b = await c.emit('b', 's')
  expect(b.failures[0]!.handler).toBe('route:recorder')
  expect(out.sent).toHaveLength(0)
  expect(() => c.route('c', out, { intercept: ['nope' as never] })).toThrow(TypeError)

  // Context attributes and the CloudEvent's own headers cannot be set or forged through an envelope.
  const bad: Array<[string, (env: Envelope) => void, RegExp]> = [
    [
      'reserved',
      (env) => {
        env.extensions.subject = 'other'
      },
      /extension name "subject"/,
    ],
    [
      'fraction',
      (env) => {
        env.extensions.ratio = 0.5
      },
      /value of extension ratio/,
    ],
    [
      'ce header',
      (env) => {
        env.headers['CE-Type'] = 'forged'
      },
      /header "CE-Type"/,
    ],
    [
      'content type',
      (env) => {
        env.headers['Content-Type'] = 'x'
      },
      /header "Content-Type"/,
    ],
    [
      'newline',
      (env) => {
        env.headers['x-token'] = 'a\r\nb'
      },
      /value of header x-token/,
    ],
  ]
  for (const [type, set, message] of bad) {
    c.route(type, out, {
      policy: 'direct',
      intercept: (env, next) => {
        set(env)
        return next()
      },
    })
    const r = await c.emit(type, 's')
    expect(String((r.failures[0]!.error as Error).cause)).toMatch(message)
  }
  expect(out.sent).toHaveLength(0)
  await c.close()
})
