import { createContainer } from '@substate/core'
import { createReceiver } from '@substate/hono'
import { expect, it } from 'vitest'
import { listen } from './_support.js'

const handshake = (origin?: string, rate?: string): RequestInit => {
  const headers: Record<string, string> = {}
  if (origin !== undefined) headers['WebHook-Request-Origin'] = origin
  if (rate !== undefined) headers['WebHook-Request-Rate'] = rate
  return { method: 'OPTIONS', headers }
}

it.each(['app.request', 'socket'] as const)(
  'answers the CloudEvents webhook validation handshake (%s)',
  async (transport) => {
    const container = createContainer()
    const app = createReceiver(container, {
      path: '/ce',
      webhook: { origins: ['eventgrid.azure.net', 'Emitter.Example.com'], rate: 120 },
    })
    const open = createReceiver(container, { webhook: { origins: '*' } })
    const off = createReceiver(container)
    const servers =
      transport === 'socket'
        ? await Promise.all([app, open, off].map((a) => listen(a.fetch)))
        : undefined
    const send = (i: number, path: string, init: RequestInit): Promise<Response> =>
      servers
        ? fetch(servers[i]!.url + path, init)
        : Promise.resolve([app, open, off][i]!.request(path, init))
    try {
      const granted = await send(0, '/ce', handshake('eventgrid.azure.net', '60'))
      expect(granted.status).toBe(200)
      expect(granted.headers.get('WebHook-Allowed-Origin')).toBe('eventgrid.azure.net')
      expect(granted.headers.get('WebHook-Allowed-Rate')).toBe('120')
      expect(granted.headers.get('Allow')).toContain('POST')
      // DNS names compare case-insensitively; the origin asked for is the one granted.
      const mixed = await send(0, '/ce', handshake('emitter.example.COM'))
      expect(mixed.status).toBe(200)
      expect(mixed.headers.get('WebHook-Allowed-Origin')).toBe('emitter.example.COM')

      // A refusal carries no consent headers, whatever its status.
      const refused = await send(0, '/ce', handshake('attacker.example.org'))
      expect(refused.status).toBe(403)
      expect(refused.headers.get('WebHook-Allowed-Origin')).toBeNull()
      expect(refused.headers.get('WebHook-Allowed-Rate')).toBeNull()

      const missing = await send(0, '/ce', handshake())
      expect(missing.status).toBe(400)
      expect(await missing.json()).toMatchObject({ field: 'WebHook-Request-Origin' })

      const any = await send(1, '/', handshake('anyone.example.net'))
      expect(any.status).toBe(200)
      expect(any.headers.get('WebHook-Allowed-Origin')).toBe('anyone.example.net')
      expect(any.headers.get('WebHook-Allowed-Rate')).toBe('*')

      // Not enabled: 405, which tells the sender the handshake is not supported.
      const disabled = await send(2, '/', handshake('eventgrid.azure.net'))
      expect(disabled.status).toBe(405)
      expect(disabled.headers.get('WebHook-Allowed-Origin')).toBeNull()
      expect(disabled.headers.get('Allow')).toContain('POST')
    } finally {
      for (const s of servers ?? []) await s.close()
      await container.close()
    }
  },
)

it('rejects webhook options that cannot be answered', () => {
  const container = createContainer()
  expect(() => createReceiver(container, { webhook: { origins: '*', rate: 0 } })).toThrow(
    /webhook.rate must be a positive integer/,
  )
  expect(() =>
    createReceiver(container, { webhook: { origins: 'eventgrid.azure.net' as never } }),
  ).toThrow(/webhook.origins must be a list/)
})
