/**
 * The packages as a user gets them: every package packed with pnpm (`workspace:^` rewritten into
 * versions), installed with npm into a new app outside the monorepo (npm adds the peer
 * dependencies, at the newest versions their ranges allow), the README's quick start run there
 * (it must print what the README says), and the app type-checked with a strict `NodeNext`
 * tsconfig, with a module that uses every package against those peer versions.
 *
 * Needs npm and the npm registry. Without npm it is skipped, loudly, on a developer's machine and
 * fails under `CI=true`.
 */
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'

const root = fileURLToPath(new URL('..', import.meta.url))
const packages = readdirSync(join(root, 'packages')).map((p) => join(root, 'packages', p))

function hasNpm(): boolean {
  return spawnSync('npm', ['--version'], { encoding: 'utf8' }).status === 0
}

/** Runs a command and returns its stdout; throws with its output when it fails. */
function run(cmd: string, args: readonly string[], cwd: string): string {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, CI: 'true' } })
  if (r.status !== 0)
    throw new Error(
      `${cmd} ${args.join(' ')} (in ${cwd}) exited ${r.status ?? r.signal}:\n${r.stdout}\n${r.stderr}`,
    )
  return r.stdout
}

/** The README's quick start snippet and the lines it says it prints (`console.log(x) // line`). */
function quickStart(): { code: string; expected: string[] } {
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('\n## Quick start'))
  const code = /```ts\n([\s\S]*?)\n```/.exec(section)?.[1]
  if (code === undefined) throw new Error('README.md has no ts snippet under "## Quick start"')
  const expected = [...code.matchAll(/console\.log\(.*\) \/\/ (.+)$/gm)].map((m) => m[1]!.trim())
  return { code, expected }
}

/** Uses every package, typed against the installed peers; type-checked, not run. */
const everyPackage = `import { PubSub } from '@google-cloud/pubsub'
import { httpEmitter, toCloudEvent, type CloudEvent } from '@substate/cloudevents'
import { createContainer, type EventContext } from '@substate/core'
import { describeStorage } from '@substate/core/testing'
import { createReceiver } from '@substate/hono'
import { pubsubPublisher, pubsubSubscriber } from '@substate/pubsub'
import { createPostgresStorage } from '@substate/storage-postgres'
import { createRedisStorage } from '@substate/storage-redis'
import type { Hono } from 'hono'
import { Redis } from 'ioredis'
import pg from 'pg'

type Events = { 'device.metrics': { cpu: number } }

export function wire(): Hono {
  const redis = createRedisStorage({ client: new Redis({ lazyConnect: true }) })
  const postgres = createPostgresStorage({ pool: new pg.Pool() })
  const container = createContainer<Events>({ storage: Math.random() > 0.5 ? redis : postgres })
  container.on('device.metrics', async (ctx) => {
    const cpu: number = ctx.payload.cpu
    await ctx.subject.set('cpu', cpu)
  })
  const client = new PubSub({ projectId: 'install-test' })
  pubsubSubscriber(container, { client, subscriptions: 'metrics' })
  container.route('device.alert.*', pubsubPublisher({ client, topic: 'alerts' }))
  container.route('device.report.*', httpEmitter({ url: 'http://127.0.0.1:9/' }))
  return createReceiver(container)
}

export const ce = (e: Parameters<typeof toCloudEvent>[0]): CloudEvent => toCloudEvent(e)
export const handler = (ctx: EventContext): string => ctx.type
export { describeStorage }
`

const tsconfig = {
  compilerOptions: {
    strict: true,
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    target: 'ES2022',
    noUncheckedIndexedAccess: true,
    verbatimModuleSyntax: true,
    skipLibCheck: false,
    types: ['node'],
    outDir: 'dist',
  },
  include: ['src'],
}

const npm = hasNpm()
if (!npm && process.env.CI !== 'true')
  console.warn('[install test] skipped: npm is not installed (CI=true fails instead)')

describe.skipIf(!npm && process.env.CI !== 'true')('the packed packages in a new app', () => {
  const work = mkdtempSync(join(tmpdir(), 'substate-install-'))
  afterAll(() => rmSync(work, { recursive: true, force: true }))

  it('install with npm, run the quick start as the README says, and type-check strictly', () => {
    if (!npm) throw new Error('npm is not installed: the install test needs it (CI=true)')
    // the build `pnpm test` did; here again so the file also runs on its own (a no-op when fresh)
    run(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-b', ...packages], root)

    const tarballs = join(work, 'tarballs')
    mkdirSync(tarballs)
    for (const dir of packages) run('pnpm', ['pack', '--pack-destination', tarballs], dir)
    const packed = readdirSync(tarballs).map((f) => join(tarballs, f))
    expect(packed).toHaveLength(packages.length)

    const app = join(work, 'app')
    mkdirSync(join(app, 'src'), { recursive: true })
    writeFileSync(
      join(app, 'package.json'),
      JSON.stringify({ name: 'substate-install-test', private: true, type: 'module' }),
    )
    // npm installs the peers too (newest allowed); @types/* are what a TypeScript user adds.
    run(
      'npm',
      [
        'install',
        '--prefer-offline',
        '--no-audit',
        '--no-fund',
        '--loglevel=error',
        ...packed,
        '@types/node@^20.19.0',
        '@types/pg@^8',
      ],
      app,
    )
    // npm added the peers at the newest versions their ranges allow
    const peers = ['hono', 'ioredis', 'pg', '@google-cloud/pubsub'].map((peer) => {
      const manifest = join(app, 'node_modules', peer, 'package.json')
      const { version } = JSON.parse(readFileSync(manifest, 'utf8')) as { version: string }
      return `${peer}@${version}`
    })
    console.log(`[install test] peers installed by npm: ${peers.join(' ')}`)
    const lock = readFileSync(join(app, 'package-lock.json'), 'utf8')
    expect(lock).not.toContain('workspace:')

    const { code, expected } = quickStart()
    expect(expected.length).toBeGreaterThan(0)
    writeFileSync(join(app, 'src', 'quick-start.ts'), `${code}\nexport {}\n`)
    writeFileSync(join(app, 'src', 'every-package.ts'), everyPackage)
    writeFileSync(join(app, 'tsconfig.json'), JSON.stringify(tsconfig, null, 2))
    run(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', app], app)

    const printed = run(process.execPath, [join(app, 'dist', 'quick-start.js')], app).split('\n')
    for (const line of expected) expect(printed).toContain(line)
  }, 240_000)
})
