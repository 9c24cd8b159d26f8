/**
 * Fault injection on Pub/Sub: the application (a child process, `tests/src/fault-worker.ts`)
 * consumes a subscription on a private emulator and takes HTTP load from retrying senders while
 * the emulator is SIGKILLed and restarted (a restarted emulator has forgotten its topics and
 * subscriptions: the test recreates them, as provisioning would). The subscriber must report the
 * outage (`/readyz` 503), reopen the subscription on its own and consume again, with every counter
 * exact and the process never restarted. Prints the recovery time.
 */
import { existsSync, statSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { type App, type LoadEvent, sendEvents, startApp, until } from '@substate/test-support/load'
import { requireProgram, startPrivatePubsubEmulator } from '@substate/test-support/private-services'
import {
  createEmulatorTopic,
  type EmulatorMessage,
  PUBSUB_PROJECT_ID,
} from '@substate/test-support/pubsub-emulator'
import { afterEach, expect, it } from 'vitest'

const WORKER = fileURLToPath(new URL('../dist/fault-worker.js', import.meta.url))
const SOURCE = fileURLToPath(new URL('../src/fault-worker.ts', import.meta.url))

const cleanup: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn().catch(() => {})
})

const MESSAGES = 200
const HTTP_EVENTS = 200
const SUBJECTS = 10

const message = (i: number): EmulatorMessage => ({
  data: '{}',
  attributes: {
    'ce-specversion': '1.0',
    'ce-id': `msg-${i}`,
    'ce-source': 'faults',
    'ce-type': 'count.inc',
    'ce-subject': `ps:${i % SUBJECTS}`,
  },
})

async function readyz(app: App): Promise<number> {
  try {
    return (await fetch(`${app.url}/readyz`, { signal: AbortSignal.timeout(5_000) })).status
  } catch {
    return 0
  }
}

async function counts(app: App, prefix: string): Promise<number[]> {
  return Promise.all(
    Array.from({ length: SUBJECTS }, async (_, s) => {
      const res = await fetch(`${app.url}/subjects/${prefix}:${s}`)
      if (res.status === 404) return 0
      const body = (await res.json()) as { props: { count?: number } }
      return body.props.count ?? 0
    }),
  )
}
const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0)

it('Pub/Sub emulator killed and restarted: the subscriber reports it, reopens on its own, counters exact, no restart', async (ctx) => {
  requireProgram('gcloud', ctx)
  if (!existsSync(WORKER) || statSync(WORKER).mtimeMs < statSync(SOURCE).mtimeMs)
    throw new Error(`${WORKER} is missing or stale: run \`npx tsc -b\` (\`pnpm test\` does)`)
  const emulator = await startPrivatePubsubEmulator()
  cleanup.push(() => emulator.dispose())
  const fixture = await createEmulatorTopic({ prefix: 'faults', host: emulator.host })
  const app = await startApp(WORKER, {
    BACKEND: 'memory',
    PUBSUB_EMULATOR_HOST: emulator.host,
    PUBSUB_PROJECT: PUBSUB_PROJECT_ID,
    SUBSCRIPTION: fixture.subscription,
  })
  cleanup.push(() => app.stop())
  await until(async () => (await readyz(app)) === 200, 30_000, '/readyz 200 at start')

  // HTTP load on other subjects, running through the whole outage.
  const httpEvents: LoadEvent[] = Array.from({ length: HTTP_EVENTS }, (_, i) => ({
    id: `http-${i}`,
    type: 'count.inc',
    subject: `http:${i % SUBJECTS}`,
  }))
  const load = sendEvents(app.url, httpEvents, { concurrency: 2, deadline: 90_000 })
  cleanup.push(async () => load.stop())

  const half = MESSAGES / 2
  await fixture.publish(...Array.from({ length: half }, (_, i) => message(i)))
  await until(
    async () => sum(await counts(app, 'ps')) === half,
    30_000,
    'the first half handled',
    () => counts(app, 'ps'),
  )

  await emulator.kill()
  const killedAt = Date.now()
  await until(async () => (await readyz(app)) === 503, 30_000, '/readyz 503 while Pub/Sub is down')
  const noticed = Date.now() - killedAt
  const httpDuringOutage = load.acked

  await emulator.start()
  const restartedAt = Date.now()
  // A restarted emulator starts empty: provisioning recreates the topic and the subscription.
  const put = async (path: string, body: unknown): Promise<void> => {
    const res = await fetch(`http://${emulator.host}/v1/${path}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    })
    if (!res.ok) throw new Error(`PUT ${path}: ${res.status} ${await res.text()}`)
  }
  await put(fixture.topicPath, {})
  await put(fixture.subscriptionPath, { topic: fixture.topicPath, ackDeadlineSeconds: 10 })
  await until(async () => (await readyz(app)) === 200, 60_000, '/readyz 200 after the restart')
  const readyAfter = Date.now() - restartedAt

  await fixture.publish(...Array.from({ length: half }, (_, i) => message(half + i)))
  await until(
    async () => sum(await counts(app, 'ps')) >= MESSAGES,
    60_000,
    'every message handled',
    () => counts(app, 'ps'),
  )
  const consumedAfter = Date.now() - restartedAt
  await load.done
  console.log(
    `[faults] pubsub emulator SIGKILL: /readyz 503 after ${noticed} ms; after the restart ` +
      `/readyz 200 in ${readyAfter} ms, all messages handled in ${consumedAfter} ms; ` +
      `HTTP kept serving (${httpDuringOutage} of ${HTTP_EVENTS} acknowledged by the time the outage was seen)`,
  )

  expect(app.exits, `the app process exited:\n${app.output().slice(-3_000)}`).toEqual([])
  expect(await counts(app, 'ps')).toEqual(Array(SUBJECTS).fill(MESSAGES / SUBJECTS))
  expect(await counts(app, 'http')).toEqual(Array(SUBJECTS).fill(HTTP_EVENTS / SUBJECTS))
  expect(load.doubleAcks).toEqual([])
}, 150_000)
