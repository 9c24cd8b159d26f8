/**
 * Shutdown of the example service (`examples/device-health/dist/main.js`) with clients still
 * connected: it prints what it drained and exits without waiting for keep-alive timeouts.
 */
import { spawn } from 'node:child_process'
import { Agent, request } from 'node:http'
import { fileURLToPath } from 'node:url'
import { until } from '@substate/test-support/load'
import { afterEach, expect, it } from 'vitest'

const root = fileURLToPath(new URL('../..', import.meta.url))
const cleanup: Array<() => unknown> = []
afterEach(() => {
  for (const fn of cleanup.splice(0)) fn()
})

/** A GET over `agent`; resolves with the status and (for a stream) without reading to the end. */
function get(url: string, agent: Agent): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent }, (res) => {
      res.resume()
      if (res.headers['content-type']?.startsWith('text/event-stream')) resolve(res.statusCode!)
      else res.once('end', () => resolve(res.statusCode!))
    })
    req.once('error', reject)
    req.end()
  })
}

it('SIGTERM with keep-alive and SSE clients connected: prints the drain report, exits at once', async () => {
  const child = spawn(process.execPath, ['examples/device-health/dist/main.js'], {
    cwd: root,
    env: { ...process.env, PORT: '0', SIMULATE: '0', REDIS_URL: '', DATABASE_URL: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  cleanup.push(() => child.kill('SIGKILL'))
  let output = ''
  child.stdout.on('data', (d: Buffer) => {
    output += d.toString()
  })
  child.stderr.on('data', (d: Buffer) => {
    output += d.toString()
  })
  const exited = new Promise<number | null>((r) => child.once('exit', r))
  await until(
    () => output.includes('ready:'),
    20_000,
    'the service to start',
    () => output,
  )
  const url = /serving on (http:\/\/[^\s]+)/.exec(output)![1]!
  // An idle keep-alive connection (the server's keep-alive timeout is 5 s) and an open SSE stream.
  const agent = new Agent({ keepAlive: true, maxSockets: 4 })
  cleanup.push(() => agent.destroy())
  expect(await get(`${url}/healthz`, agent)).toBe(200)
  expect(await get(`${url}/events`, agent)).toBe(200)

  const t0 = Date.now()
  child.kill('SIGTERM')
  expect(await exited).toBe(0)
  const ms = Date.now() - t0
  expect(output).toMatch(/drained: 0 in flight, 0 subjects stored/)
  // Not the keep-alive timeout (5 s): the idle connection was closed after the drain.
  expect(ms).toBeLessThan(4_000)
})
