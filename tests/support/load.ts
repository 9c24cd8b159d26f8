/**
 * Load for fault-injection tests: an application run as a child process (so that a crash shows
 * as an exit, never as a test-runner failure), and senders that post CloudEvents over HTTP and
 * retry every non-2xx answer (and every network error) with the same CloudEvent id, as a
 * well-behaved producer does.
 *
 * @example
 * ```ts
 * const app = await startApp(WORKER, { BACKEND: 'redis', URL: redis.url, PREFIX: 'x:' })
 * const load = sendEvents(app.url, events, { concurrency: 8 })
 * await until(() => load.acked >= 100)
 * await redis.kill(); await redis.start()
 * await load.done
 * expect(app.exits).toEqual([])
 * ```
 * @module
 */
import { type ChildProcess, fork } from 'node:child_process'

/** An application under test, run as a child process. */
export interface App {
  readonly url: string
  readonly pid: number
  readonly child: ChildProcess
  /** Every exit of the process seen so far (`[]` while it never exited). */
  readonly exits: ReadonlyArray<{ code: number | null; signal: NodeJS.Signals | null }>
  /** The last 64 KB of its stdout and stderr. */
  output(): string
  /** SIGTERM, then SIGKILL after `ms`; resolves once it exited. Idempotent. */
  stop(ms?: number): Promise<void>
}

/**
 * Forks `script` (compiled JavaScript) with `env` added to the environment and resolves once it
 * says `{ ready: true, port }` over IPC.
 */
export function startApp(
  script: string,
  env: Record<string, string>,
  timeoutMs = 30_000,
): Promise<App> {
  return new Promise((resolve, reject) => {
    const child = fork(script, [], {
      env: { ...process.env, ...env },
      execArgv: [],
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    })
    let out = ''
    const keep = (chunk: Buffer): void => {
      out = (out + chunk.toString()).slice(-65_536)
    }
    child.stdout?.on('data', keep)
    child.stderr?.on('data', keep)
    const exits: Array<{ code: number | null; signal: NodeJS.Signals | null }> = []
    const exited = new Promise<void>((r) =>
      child.once('exit', (code, signal) => {
        exits.push({ code, signal })
        r()
      }),
    )
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`[tests] ${script} did not start in ${timeoutMs} ms:\n${out}`))
    }, timeoutMs)
    child.on('message', (m: { ready?: boolean; port?: number }) => {
      if (!m.ready) return
      clearTimeout(timer)
      resolve({
        url: `http://127.0.0.1:${m.port}`,
        pid: child.pid!,
        child,
        exits,
        output: () => out,
        async stop(ms = 10_000) {
          if (exits.length > 0) return
          child.kill('SIGTERM')
          const t = setTimeout(() => child.kill('SIGKILL'), ms)
          await exited
          clearTimeout(t)
        },
      })
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`[tests] ${script} exited (${code}) before it was ready:\n${out}`))
    })
  })
}

/** An event for {@link sendEvents}: a binary-mode CloudEvent. */
export interface LoadEvent {
  readonly id: string
  readonly type: string
  readonly subject: string
  readonly data?: unknown
}

/** Running senders; counters update as answers arrive. */
export interface Load {
  /** Events answered 2xx. */
  readonly acked: number
  /** Requests sent, retries included. */
  readonly attempts: number
  /** Answers that were not 2xx, by status (0: no answer: a network error or a timeout). */
  readonly failures: ReadonlyMap<number, number>
  /** `Date.now()` of every 2xx, in order. */
  readonly ackTimes: readonly number[]
  /** Ids answered 2xx more than once (must stay empty: each event is sent until its first 2xx). */
  readonly doubleAcks: readonly string[]
  /** Resolves once every event was answered 2xx; rejects after `deadline`. */
  readonly done: Promise<void>
  /** Stops retrying (for cleanup after a failure). */
  stop(): void
}

/** Options of {@link sendEvents}. */
export interface LoadOptions {
  /** Requests in flight at once. @default 8 */
  readonly concurrency?: number
  /** Milliseconds between retries of one event (doubling up to 1 s). @default 50 */
  readonly retryDelay?: number
  /** Milliseconds a request may take before it counts as failed and is retried. @default 15_000 */
  readonly requestTimeout?: number
  /** Milliseconds until `done` rejects. @default 120_000 */
  readonly deadline?: number
}

/**
 * Sends `events` to `url` (POST, binary mode, source `load`), `concurrency` at a time, each one
 * until it is answered 2xx: a non-2xx answer or a network error is retried with the same id.
 */
export function sendEvents(
  url: string,
  events: readonly LoadEvent[],
  options: LoadOptions = {},
): Load {
  const { concurrency = 8, retryDelay = 50, requestTimeout = 15_000, deadline = 120_000 } = options
  const failures = new Map<number, number>()
  const ackTimes: number[] = []
  const doubleAcks: string[] = []
  const ackedIds = new Set<string>()
  let attempts = 0
  let stopped = false
  let next = 0
  const end = Date.now() + deadline
  const fail = (status: number): void => {
    failures.set(status, (failures.get(status) ?? 0) + 1)
  }
  const one = async (event: LoadEvent): Promise<void> => {
    let delay = retryDelay
    for (;;) {
      if (stopped) throw new Error('[tests] load stopped')
      if (Date.now() > end)
        throw new Error(`[tests] event ${event.id} not acknowledged within ${deadline} ms`)
      attempts++
      let status = 0
      try {
        const res = await fetch(`${url}/`, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'ce-specversion': '1.0',
            'ce-id': event.id,
            'ce-source': 'load',
            'ce-type': event.type,
            'ce-subject': event.subject,
          },
          body: JSON.stringify(event.data ?? {}),
          signal: AbortSignal.timeout(requestTimeout),
        })
        status = res.status
        await res.arrayBuffer()
      } catch {
        status = 0
      }
      if (status >= 200 && status < 300) {
        if (ackedIds.has(event.id)) doubleAcks.push(event.id)
        ackedIds.add(event.id)
        ackTimes.push(Date.now())
        return
      }
      fail(status)
      await new Promise((r) => setTimeout(r, delay))
      delay = Math.min(1_000, delay * 2)
    }
  }
  const worker = async (): Promise<void> => {
    while (next < events.length) {
      const event = events[next++]!
      await one(event)
    }
  }
  const done = Promise.all(Array.from({ length: concurrency }, worker)).then(() => {})
  done.catch(() => {})
  return {
    get acked() {
      return ackTimes.length
    },
    get attempts() {
      return attempts
    },
    failures,
    ackTimes,
    doubleAcks,
    done,
    stop() {
      stopped = true
    },
  }
}

/** Polls `cond` every 20 ms until it holds; rejects after `ms` with `what` (and `state()`). */
export async function until(
  cond: () => boolean | Promise<boolean>,
  ms: number,
  what: string,
  state: () => unknown = () => '',
): Promise<void> {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end)
      throw new Error(
        `[tests] timed out after ${ms} ms waiting for ${what} ${JSON.stringify(await state())}`,
      )
    await new Promise((r) => setTimeout(r, 20))
  }
}
