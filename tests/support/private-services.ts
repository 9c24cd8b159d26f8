/**
 * Private services for fault-injection tests: a Redis, a PostgreSQL cluster and a Pub/Sub emulator
 * started by the test itself, on free loopback ports of their own, so that a test may kill and
 * restart them without touching the shared ones other tests use.
 *
 * Every service runs in a process group of its own and is stopped by its PID (never by name):
 * `dispose()` in the test's cleanup, and a last-resort `SIGKILL` of every group still running when
 * the test process exits (a failed or interrupted test leaves nothing behind).
 *
 * A missing program (`redis-server`, `initdb`/`pg_ctl`, `gcloud`) skips the test loudly on a
 * developer's machine and fails it under `CI=true` ({@link requireProgram}).
 *
 * @example
 * ```ts
 * it('survives a Redis crash', async (ctx) => {
 *   requireProgram('redis-server', ctx)
 *   await using redis = await startPrivateRedis()
 *   await redis.kill()     // SIGKILL
 *   await redis.start()    // same port, same data directory (AOF, appendfsync always)
 * })
 * ```
 * @module
 */
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process'
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
} from 'node:fs'
import { createServer, Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestContext } from 'vitest'

/** Process groups started here and still running: killed when the test process exits. */
const groups = new Set<number>()
/** PostgreSQL data directories still running: stopped (immediate) when the test process exits. */
const clusters = new Set<string>()
let hooked = false
function hookExit(): void {
  if (hooked) return
  hooked = true
  process.once('exit', () => {
    for (const pid of groups) killGroup(pid)
    for (const dir of clusters) {
      try {
        execFileSync(PG_CTL, ['stop', '-D', dir, '-m', 'immediate'], {
          stdio: 'ignore',
          ...asPostgres(),
        })
      } catch {}
    }
  })
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL')
  } catch {}
}

/** `initdb` and `pg_ctl`: SUBSTATE_PG_BIN, else on the PATH, else the newest Debian cluster's. */
function pgBin(name: 'initdb' | 'pg_ctl'): string {
  const candidates = [
    process.env.SUBSTATE_PG_BIN ? join(process.env.SUBSTATE_PG_BIN, name) : undefined,
    `/usr/local/bin/${name}`,
    which(name),
    ...debianClusters().map((dir) => join(dir, name)),
  ]
  return candidates.find((c): c is string => c !== undefined && existsSync(c)) ?? name
}
function which(name: string): string | undefined {
  try {
    return (
      execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim() || undefined
    )
  } catch {
    return undefined
  }
}
function debianClusters(): string[] {
  try {
    return readdirSync('/usr/lib/postgresql')
      .sort((a, b) => Number(b) - Number(a))
      .map((v) => `/usr/lib/postgresql/${v}/bin`)
  } catch {
    return []
  }
}
const INITDB = pgBin('initdb')
const PG_CTL = pgBin('pg_ctl')

/** Programs the private services need. */
export type Program = 'redis-server' | 'initdb' | 'gcloud'

function isCI(): boolean {
  const ci = process.env.CI
  return ci !== undefined && ci !== '' && ci !== '0' && ci !== 'false'
}

/** Whether `program` can be run on this machine. */
export function hasProgram(program: Program): boolean {
  if (program === 'initdb') return existsSync(INITDB) && existsSync(PG_CTL)
  return which(program) !== undefined
}

/**
 * Checks that `program` is installed. When it is not, the test is skipped with a warning on a
 * developer's machine, and fails under `CI=true`.
 */
export function requireProgram(program: Program, ctx: Pick<TestContext, 'skip'>): void {
  if (hasProgram(program)) return
  const message = `[tests] ${program} is not installed: the fault-injection test needs it`
  if (isCI()) throw new Error(`${message}; CI=true requires it`)
  console.warn(`\n!! ${message}: SKIPPED\n`)
  ctx.skip(`${program} is not installed`)
}

/** A free TCP port on 127.0.0.1 (free now: the caller binds it soon after). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

/** Resolves once something accepts TCP connections on `port`, or rejects after `ms`. */
export async function waitForPort(port: number, ms = 60_000): Promise<void> {
  const end = Date.now() + ms
  while (!(await connects(port))) {
    if (Date.now() > end)
      throw new Error(`[tests] nothing listens on 127.0.0.1:${port} after ${ms} ms`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

function connects(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket()
    const done = (ok: boolean): void => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(1_000, () => done(false))
    socket.once('error', () => done(false))
    socket.connect(port, '127.0.0.1', () => done(true))
  })
}

/** A service started by a test: stop it, start it again on the same port, dispose of it. */
export interface PrivateService {
  readonly port: number
  /** Whether it is running (as far as this handle knows). */
  readonly running: boolean
  /** Starts it (again) on the same port and data; resolves once it accepts connections. */
  start(): Promise<void>
  /** Crashes it: SIGKILL (PostgreSQL: `pg_ctl stop -m immediate`). Resolves once it is gone. */
  kill(): Promise<void>
  /** Stops it for good and removes its data. Idempotent. */
  dispose(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/** A process group started detached, with its output kept (the last 64 KB) for error messages. */
function launch(
  command: string,
  args: string[],
  env?: NodeJS.ProcessEnv,
): ChildProcess & { output(): string } {
  hookExit()
  const child = spawn(command, args, {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: env ?? process.env,
  })
  let output = ''
  const keep = (chunk: Buffer): void => {
    output = (output + chunk.toString()).slice(-65_536)
  }
  child.stdout?.on('data', keep)
  child.stderr?.on('data', keep)
  if (child.pid !== undefined) groups.add(child.pid)
  child.once('exit', () => {
    if (child.pid !== undefined) groups.delete(child.pid)
  })
  return Object.assign(child, { output: () => output })
}

async function killAndWait(child: ChildProcess | undefined): Promise<void> {
  if (child?.pid === undefined || child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((r) => child.once('exit', r))
  killGroup(child.pid)
  await exited
}

/** A private Redis: AOF with `appendfsync always`, so every acknowledged write survives a SIGKILL. */
export interface PrivateRedis extends PrivateService {
  /** `redis://127.0.0.1:<port>` */
  readonly url: string
}

/** Starts a private `redis-server` on a free port, with its data in a temporary directory. */
export async function startPrivateRedis(): Promise<PrivateRedis> {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'substate-redis-'))
  let child: ReturnType<typeof launch> | undefined
  const service: PrivateRedis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    get running() {
      return child !== undefined && child.exitCode === null && child.signalCode === null
    },
    async start() {
      if (service.running) return
      child = launch('redis-server', [
        '--port',
        `${port}`,
        '--bind',
        '127.0.0.1',
        '--dir',
        dir,
        '--appendonly',
        'yes',
        '--appendfsync',
        'always',
        '--save',
        '',
        '--daemonize',
        'no',
      ])
      const started = child
      await Promise.race([
        waitForPort(port, 30_000),
        new Promise((_, reject) =>
          started.once('exit', (code) =>
            reject(new Error(`[tests] redis-server exited (${code}): ${started.output()}`)),
          ),
        ),
      ])
    },
    kill: () => killAndWait(child),
    async dispose() {
      await killAndWait(child)
      rmSync(dir, { recursive: true, force: true })
    },
    [Symbol.asyncDispose]: () => service.dispose(),
  }
  await service.start()
  return service
}

/** A private PostgreSQL cluster. */
export interface PrivatePostgres extends PrivateService {
  /** `postgres://postgres@127.0.0.1:<port>/postgres` */
  readonly url: string
}

/** Options for running a program as the `postgres` user when this process is root. */
function asPostgres(): { uid?: number; gid?: number } {
  if (process.getuid?.() !== 0) return {}
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'))
  if (!line) return {}
  const [, , uid, gid] = line.split(':')
  return { uid: Number(uid), gid: Number(gid) }
}

function run(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { ...asPostgres(), timeout: 120_000 }, (error, stdout, stderr) => {
      if (error)
        reject(new Error(`[tests] ${command} ${args.join(' ')}: ${stderr || error.message}`))
      else resolve(stdout)
    })
  })
}

/**
 * `initdb`s a private PostgreSQL cluster in a temporary directory (trust authentication, user
 * `postgres`, loopback only) and starts it on a free port with `pg_ctl`. `kill()` is
 * `pg_ctl stop -m immediate` (every server process quits at once, as in a crash; committed
 * transactions survive, recovered from the WAL at the next start).
 */
export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  hookExit()
  const port = await freePort()
  const base = mkdtempSync(join(tmpdir(), 'substate-pg-'))
  const dir = join(base, 'data')
  const { uid, gid } = asPostgres()
  if (uid !== undefined && gid !== undefined) chownSync(base, uid, gid)
  chmodSync(base, 0o700)
  await run(INITDB, ['-D', dir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync'])
  let running = false
  const service: PrivatePostgres = {
    port,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    get running() {
      return running
    },
    async start() {
      if (running) return
      const options = `-p ${port} -k ${base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50`
      await run(PG_CTL, [
        'start',
        '-D',
        dir,
        '-w',
        '-t',
        '60',
        '-l',
        join(base, 'log'),
        '-o',
        options,
      ])
      running = true
      clusters.add(dir)
    },
    async kill() {
      if (!running) return
      await run(PG_CTL, ['stop', '-D', dir, '-m', 'immediate', '-w'])
      running = false
      clusters.delete(dir)
    },
    async dispose() {
      await service.kill().catch(() => {})
      rmSync(base, { recursive: true, force: true })
    },
    [Symbol.asyncDispose]: () => service.dispose(),
  }
  await service.start()
  return service
}

/** A private Pub/Sub emulator. Its state is in memory: a restart forgets topics and subscriptions. */
export interface PrivatePubsubEmulator extends PrivateService {
  /** `127.0.0.1:<port>`, the `PUBSUB_EMULATOR_HOST` form. */
  readonly host: string
}

/** Starts a private Pub/Sub emulator (`gcloud beta emulators pubsub start`) on a free port. */
export async function startPrivatePubsubEmulator(): Promise<PrivatePubsubEmulator> {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'substate-pubsub-'))
  let child: ReturnType<typeof launch> | undefined
  const service: PrivatePubsubEmulator = {
    port,
    host: `127.0.0.1:${port}`,
    get running() {
      return child !== undefined && child.exitCode === null && child.signalCode === null
    },
    async start() {
      if (service.running) return
      child = launch(
        'gcloud',
        [
          'beta',
          'emulators',
          'pubsub',
          'start',
          `--host-port=127.0.0.1:${port}`,
          `--data-dir=${dir}`,
          '--quiet',
        ],
        // Its own gcloud configuration directory: no prompts, no shared state.
        { ...process.env, CLOUDSDK_CORE_DISABLE_PROMPTS: '1' },
      )
      const started = child
      await Promise.race([
        waitForHttp(port, 90_000),
        new Promise((_, reject) =>
          started.once('exit', (code) =>
            reject(new Error(`[tests] the Pub/Sub emulator exited (${code}): ${started.output()}`)),
          ),
        ),
      ])
    },
    kill: () => killAndWait(child),
    async dispose() {
      await killAndWait(child)
      rmSync(dir, { recursive: true, force: true })
    },
    [Symbol.asyncDispose]: () => service.dispose(),
  }
  await service.start()
  return service
}

async function waitForHttp(port: number, ms: number): Promise<void> {
  const end = Date.now() + ms
  for (;;) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(1_000) })
      if (res.ok) return
    } catch {}
    if (Date.now() > end)
      throw new Error(`[tests] the Pub/Sub emulator on ${port} did not answer in ${ms} ms`)
    await new Promise((r) => setTimeout(r, 100))
  }
}
