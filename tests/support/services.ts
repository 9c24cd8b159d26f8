/**
 * Helpers for tests that need a real service (Redis, PostgreSQL, the Pub/Sub emulator), as found
 * or started by `tests/global-setup.ts`. A missing service skips the tests that need it, loudly,
 * on a developer's machine, and fails them under `CI=true`.
 *
 * @example
 * ```ts
 * import { describeWith, redisUrl } from '../support/services.js'
 *
 * describeWith('redis', 'redis storage', () => {
 *   it('round-trips', async () => {
 *     const client = new Redis(redisUrl!)
 *   })
 * })
 * ```
 * @module
 */
import { describe, inject, it, type TestContext } from 'vitest'
import type { ServiceName, Services } from '../global-setup.js'

export type { ServiceName, Services }

/** Where each service answers, or `null`: from the global setup, else from the environment. */
export const services: Services = provided() ?? {
  redis: process.env.REDIS_URL || null,
  postgres: process.env.DATABASE_URL || null,
  pubsub: process.env.PUBSUB_EMULATOR_HOST || null,
}

/** The Redis URL, or `undefined` when Redis is not available. */
export const redisUrl: string | undefined = services.redis ?? undefined
/** The PostgreSQL URL (database `test`), or `undefined` when PostgreSQL is not available. */
export const databaseUrl: string | undefined = services.postgres ?? undefined
/** The Pub/Sub emulator's `host:port`, or `undefined` when the emulator is not available. */
export const pubsubEmulatorHost: string | undefined = services.pubsub ?? undefined

/**
 * A `describe` block that needs `service`. When the service is missing, the block is skipped
 * with a warning on a developer's machine, and stands as one failing test under `CI=true`.
 */
export function describeWith(service: ServiceName, name: string, fn: () => void): void {
  if (services[service] !== null) {
    describe(name, fn)
  } else if (isCI()) {
    describe(name, () => {
      it(`needs ${service}`, () => {
        throw new Error(`${missing(service)}; CI=true requires it`)
      })
    })
  } else {
    warn(service)
    describe.skip(`${name} [skipped: ${service} is not available]`, fn)
  }
}

/**
 * Returns the service's URL (`host:port` for Pub/Sub) inside a test. When it is missing, the
 * test is skipped with a warning on a developer's machine, and fails under `CI=true`.
 *
 * @example
 * ```ts
 * it('stores', async (ctx) => {
 *   const pool = new pg.Pool({ connectionString: requireService('postgres', ctx) })
 * })
 * ```
 */
export function requireService(service: ServiceName, ctx: Pick<TestContext, 'skip'>): string {
  const value = services[service]
  if (value !== null) return value
  if (isCI()) throw new Error(`${missing(service)}; CI=true requires it`)
  warn(service)
  return ctx.skip(`${service} is not available`)
}

function provided(): Services | undefined {
  try {
    return inject('services')
  } catch {
    // Imported outside a vitest worker (a child process of a test): fall back to the environment.
    return undefined
  }
}

function isCI(): boolean {
  const ci = process.env.CI
  return ci !== undefined && ci !== '' && ci !== '0' && ci !== 'false'
}

function missing(service: ServiceName): string {
  return `[tests] ${service} is not available (start it with \`bash scripts/services.sh start\`)`
}

const warned = new Set<ServiceName>()

function warn(service: ServiceName): void {
  if (warned.has(service)) return
  warned.add(service)
  console.warn(`\n!! ${missing(service)}: tests that need it are SKIPPED\n`)
}
