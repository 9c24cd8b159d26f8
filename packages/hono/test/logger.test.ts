import { createContainer, type Logger } from '@substate/core'
import { createReceiver } from '@substate/hono'
import { expect, it } from 'vitest'
import { binary } from './_support.js'

it('the receiver logs internal failures through a pino-style logger, with the error id it answered', async () => {
  const calls: Array<{ level: string; obj: Record<string, unknown>; msg?: string }> = []
  const at = (level: string) => (obj: Record<string, unknown>, msg?: string) =>
    void calls.push({ level, obj, ...(msg === undefined ? {} : { msg }) })
  const logger: Logger = {
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
  }
  const container = createContainer({ logger })
  container.on('device.reading', async () => {
    throw new Error('sensor table gone')
  })
  const app = createReceiver(container, { logger })
  const res = await app.request('/', { method: 'POST', headers: binary(), body: '{}' })
  expect(res.status).toBe(500)
  const { errorId } = (await res.json()) as { errorId: string }
  // The container logged the handler failure with the event's ids...
  const failure = calls.find((c) => c.obj.eventId === 'e-1')
  expect(failure?.level).toBe('error')
  expect((failure!.obj.err as Error).message).toBe('sensor table gone')
  // ...and the receiver its 500, with the id the client got.
  const answered = calls.find((c) => c.obj.errorId === errorId)
  expect(answered?.level).toBe('error')
  expect(answered?.obj.err).toBeInstanceOf(Error)
  await container.close()
})
