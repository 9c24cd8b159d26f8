/**
 * Vitest global setup: finds Redis, PostgreSQL and the Google Pub/Sub emulator, starts the ones
 * that are not answering (through `scripts/services.sh`, the one implementation, shared with
 * `.ci/run`), and tells the tests where they are.
 *
 * - `inject('services')` gives `{ redis, postgres, pubsub }`: a URL (`host:port` for Pub/Sub)
 *   or `null` when the service is not available. `tests/support/services.ts` wraps it.
 * - `REDIS_URL`, `DATABASE_URL` and `PUBSUB_EMULATOR_HOST` are set for the test workers when
 *   absent and the service answers; when present, they say where to look, and a service on a
 *   loopback address is still started when it is not answering.
 * - Under `CI=true` a service that cannot be brought up makes the run fail. Locally it is a loud
 *   warning, and the tests that need it skip.
 * - `teardown` stops only what `setup` started, and only once no other caller (a second vitest
 *   run, `.ci/run`) still holds a lease on it.
 *
 * @module
 */
import { execFile } from 'node:child_process'
import { Socket } from 'node:net'
import { fileURLToPath } from 'node:url'
import type { TestProject } from 'vitest/node'

/** Where each test service answers, or `null` when it is not available. */
export interface Services {
  /** A Redis URL, e.g. `redis://127.0.0.1:6379`. */
  readonly redis: string | null
  /** A PostgreSQL URL, e.g. `postgres://postgres@127.0.0.1:5432/test`. */
  readonly postgres: string | null
  /** The Pub/Sub emulator's `host:port` (the `PUBSUB_EMULATOR_HOST` form), e.g. `127.0.0.1:8085`. */
  readonly pubsub: string | null
}

/** One of the services the tests can depend on. */
export type ServiceName = keyof Services

declare module 'vitest' {
  export interface ProvidedContext {
    services: Services
  }
}

interface ServiceSpec {
  readonly env: string
  readonly fallback: string
  readonly defaultPort: number
  /** The script's variable that moves it to another local port. */
  readonly portVariable: string
}

const SPECS: Readonly<Record<ServiceName, ServiceSpec>> = {
  redis: {
    env: 'REDIS_URL',
    fallback: 'redis://127.0.0.1:6379',
    defaultPort: 6379,
    portVariable: 'SUBSTATE_REDIS_PORT',
  },
  postgres: {
    env: 'DATABASE_URL',
    // The machine's PostgreSQL trusts both `postgres` and `root` on 127.0.0.1; `postgres` is the
    // role every installation has.
    fallback: 'postgres://postgres@127.0.0.1:5432/test',
    defaultPort: 5432,
    portVariable: 'SUBSTATE_POSTGRES_PORT',
  },
  pubsub: {
    env: 'PUBSUB_EMULATOR_HOST',
    fallback: '127.0.0.1:8085',
    defaultPort: 8085,
    portVariable: 'SUBSTATE_PUBSUB_PORT',
  },
}
const NAMES = Object.keys(SPECS) as ServiceName[]
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1'])
const SCRIPT = fileURLToPath(new URL('../scripts/services.sh', import.meta.url))
/** Enough for the script to wait for the slowest service (90 s) and then some. */
const SCRIPT_TIMEOUT_MS = 180_000

/** Whether this run is CI's: a missing service fails it instead of skipping tests. */
function isCI(): boolean {
  const ci = process.env.CI
  return ci !== undefined && ci !== '' && ci !== '0' && ci !== 'false'
}

/** What `setup` asked the script for, so that `teardown` releases the same leases. */
let leased: { readonly args: string[]; readonly env: Record<string, string> } | undefined

/** Finds or starts the services, then provides `services` and sets the environment variables. */
export async function setup(project: TestProject): Promise<void> {
  const targets = Object.fromEntries(
    NAMES.map((name) => {
      const spec = SPECS[name]
      const value = process.env[spec.env] || spec.fallback
      return [name, { value, ...hostAndPort(name, value) }]
    }),
  ) as Record<ServiceName, { value: string; host: string; port: number }>

  // Services on this machine are the script's to probe (with their own protocol) and start;
  // a service elsewhere is only probed, with a TCP connect.
  const local = NAMES.filter((name) => LOOPBACK.has(targets[name].host))
  const remote = NAMES.filter((name) => !LOOPBACK.has(targets[name].host))
  const down = new Set<ServiceName>()
  if (local.length > 0) {
    const portEnv = Object.fromEntries(
      local.map((n) => [SPECS[n].portVariable, `${targets[n].port}`]),
    )
    const owner = ['--owner', `${process.pid}`, '--only', local.join(',')]
    leased = { args: ['stop', ...owner], env: portEnv }
    const run = await runScript(['start', ...owner], portEnv)
    if (run.code !== 0) {
      // The script's last word names what it could not bring up; without it, trust nothing.
      const named = /^services: missing: (.*)$/m.exec(run.output)?.[1]?.split(' ')
      for (const name of local) if (!named || named.includes(name)) down.add(name)
    }
    // Quiet when everything was already running; otherwise say what happened.
    if (run.code !== 0 || /started|creating/.test(run.output)) {
      process.stdout.write(run.output.endsWith('\n') ? run.output : `${run.output}\n`)
    }
  }
  const reachable = await Promise.all(
    remote.map((name) => probe(targets[name].host, targets[name].port)),
  )
  remote.forEach((name, i) => {
    if (!reachable[i]) down.add(name)
  })
  const services = Object.fromEntries(
    NAMES.map((name) => [name, down.has(name) ? null : targets[name].value]),
  ) as unknown as Services

  for (const name of NAMES) {
    const value = services[name]
    if (value !== null && !process.env[SPECS[name].env]) process.env[SPECS[name].env] = value
  }

  const missing = NAMES.filter((name) => services[name] === null)
  if (missing.length > 0) {
    const lines = missing.map(
      (name) => `${name} is not answering at ${targets[name].host}:${targets[name].port}`,
    )
    if (isCI()) {
      await teardown()
      throw new Error(
        `[tests] CI=true and ${lines.join('; ')}. Every service is required in CI: ` +
          'see the output of scripts/services.sh above.',
      )
    }
    const bar = '!'.repeat(78)
    process.stderr.write(
      `\n${bar}\n${lines.map((l) => `!! ${l}: tests that need it are SKIPPED`).join('\n')}\n` +
        '!! start the services with `bash scripts/services.sh start`; under CI=true this fails\n' +
        `${bar}\n\n`,
    )
  }
  project.provide('services', services)
}

/** Stops what `setup` started, unless another run still holds a lease on it. */
export async function teardown(): Promise<void> {
  if (!leased) return
  const { args, env } = leased
  leased = undefined
  const run = await runScript(args, env)
  if (run.code !== 0 || /stopped/.test(run.output)) process.stdout.write(run.output)
}

function hostAndPort(name: ServiceName, value: string): { host: string; port: number } {
  // PUBSUB_EMULATOR_HOST is `host:port`, the others are URLs.
  const url = new URL(name === 'pubsub' ? `http://${value}` : value)
  return { host: url.hostname, port: Number(url.port) || SPECS[name].defaultPort }
}

function runScript(
  args: readonly string[],
  env: Record<string, string>,
): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(
      'bash',
      [SCRIPT, ...args],
      { env: { ...process.env, ...env }, timeout: SCRIPT_TIMEOUT_MS },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0
        const output = `${stdout}${stderr}${error && !stderr ? `services: ${error.message}\n` : ''}`
        resolve({ code, output })
      },
    )
  })
}

/** A TCP connect with a short timeout: enough to tell a listening server from none. */
function probe(host: string, port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket()
    const done = (ok: boolean): void => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(timeoutMs, () => done(false))
    socket.once('error', () => done(false))
    socket.connect(port, host.replace(/^\[|\]$/g, ''), () => done(true))
  })
}
