/**
 * Effects leave once (DESIGN §3.13), with real processes, sockets and Redis: a unit's outbound
 * event is sent after its commit and only for its final run, and a replica killed between the
 * commit and the send loses nothing: another replica relays it from the storage's outbox, with
 * the same CloudEvents id.
 */
import { type ChildProcess, fork } from 'node:child_process'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { describeWith, redisUrl } from '@substate/test-support/services'
import { Redis } from 'ioredis'
import { afterEach, expect, it } from 'vitest'

const REPLICA = fileURLToPath(new URL('./dist/replica.js', import.meta.url))
const cleanup: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn().catch(() => {})
})

/** An HTTP sink: records every delivery's ce-id; answers 202, or never while `hang` is set. */
async function sink(): Promise<{ url: string; ids: string[]; answered: string[]; hang: boolean }> {
  const state = { url: '', ids: [] as string[], answered: [] as string[], hang: false }
  const held: ServerResponse[] = []
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    req.resume()
    req.on('end', () => {
      const id = String(req.headers['ce-id'])
      state.ids.push(id)
      if (state.hang) {
        held.push(res)
        return
      }
      state.answered.push(id)
      res.writeHead(202).end()
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`
  cleanup.push(async () => {
    for (const res of held) res.destroy()
    server.closeAllConnections()
    await new Promise((r) => server.close(r))
  })
  return state
}

function replica(env: Record<string, string>): Promise<{ url: string; child: ChildProcess }> {
  const child = fork(REPLICA, { env: { ...process.env, ...env }, execArgv: [], stdio: 'inherit' })
  cleanup.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  return new Promise((resolve, reject) => {
    child.once('message', (m) => resolve({ url: (m as { url: string }).url, child }))
    child.once('exit', (code) => reject(new Error(`replica exited with ${code}`)))
  })
}

const post = (url: string, id: string, value: number) =>
  fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'ce-specversion': '1.0',
      'ce-id': id,
      'ce-source': 'outbox-test',
      'ce-type': 'reading',
      'ce-subject': 'device:1',
    },
    body: JSON.stringify(value),
  })

describeWith('redis', 'the outbox on Redis', () => {
  const setup = () => {
    const prefix = `outbox-${process.pid}-${Date.now().toString(36)}:`
    const client = new Redis(redisUrl!)
    cleanup.push(async () => {
      const keys = await client.keys(`*${prefix}*`)
      if (keys.length > 0) await client.del(...keys)
      client.disconnect()
    })
    return { BACKEND: 'redis', URL: redisUrl!, NAMESPACE: prefix }
  }

  it('a unit retried after a failure sends its outbound event once', async () => {
    const out = await sink()
    const { url } = await replica({ ...setup(), SINK: out.url, FAIL_FIRST: '1' })
    expect((await post(url, 'r1', 7)).status).toBe(500) // a handler failed: nothing left
    expect((await post(url, 'r1', 7)).status).toBe(202) // the redelivery
    expect((await post(url, 'r1', 7)).status).toBe(202) // a duplicate
    await expect.poll(() => out.answered.length, { timeout: 20_000 }).toBe(1)
    expect(out.ids).toHaveLength(1)
  }, 60_000)

  it('a replica killed between commit and send: another one relays the event from the outbox, same id', async () => {
    const out = await sink()
    out.hang = true
    const env = { ...setup(), SINK: out.url, OUTBOX_LEASE: '1000' }
    const a = await replica(env)
    expect((await post(a.url, 'k1', 9)).status).toBe(202) // committed, outbox written
    await expect.poll(() => out.ids.length, { timeout: 20_000 }).toBe(1) // the send hangs
    a.child.kill('SIGKILL') // killed before the send completed (or was removed from the outbox)
    out.hang = false
    await replica(env) // relays what the outbox holds once A's lease ran out
    await expect.poll(() => out.answered.length, { timeout: 30_000 }).toBe(1)
    expect(out.answered[0]).toBe(out.ids[0]) // the same deterministic id: a receiver dedups it
    await new Promise((r) => setTimeout(r, 1500)) // a second delivery would show here
    expect(out.answered).toHaveLength(1)
  }, 90_000)
})
