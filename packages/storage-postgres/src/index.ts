/**
 * PostgreSQL storage for Substate, in KRules' `subjects` table (a Python KRules service can share
 * it).
 *
 * @example
 * import pg from 'pg'
 * import { createContainer } from '@substate/core'
 * import { createPostgresStorage } from '@substate/storage-postgres'
 *
 * const pool = new pg.Pool({ connectionString: 'postgres://postgres@127.0.0.1:5432/test' })
 * const container = createContainer({ storage: createPostgresStorage({ pool }) })
 * await container.subject('device:1').set('count', (n = 0) => (n as number) + 1, { cache: false })
 * @module
 */

export type { PgQueryable, PgQueryConfig, PostgresStorageOptions } from './postgres-storage.js'
export { createPostgresStorage } from './postgres-storage.js'
