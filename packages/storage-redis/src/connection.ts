/*
 * Bounded-time calls on a caller's ioredis client. ioredis queues commands while it is offline
 * and reconnects forever by default, so a command sent to a server that is down can wait for a
 * long time. Here a call is only sent once the client is ready, fails at once with the last
 * connection error while the server is known to be down, and never takes longer than `timeout`.
 */
import { type PropertyKind, StorageError, TimeoutError } from '@substate/core'
import type { Redis } from 'ioredis'

export const NAME = 'storage-redis' as const

/** `s:{prefix}{name}` fields: `p{prop}` for properties, `e{prop}` for ext properties (KRules). */
export const field = (kind: PropertyKind, name: string): string =>
  (kind === 'prop' ? 'p' : 'e') + name

interface Health {
  /** The last connection error since the client was last ready. */
  lastError: Error | undefined
  /** The one wait for `ready` that every call made while connecting shares. */
  waiting: Promise<void> | undefined
}

const health = new WeakMap<Redis, Health>()

/**
 * Watches a client's connection. The `error` listener also silences ioredis' "Unhandled error
 * event" log line: those errors reach the caller as `StorageError` causes instead.
 */
export function watch(client: Redis): Health {
  let h = health.get(client)
  if (!h) {
    const state: Health = { lastError: undefined, waiting: undefined }
    client.on('error', (e: Error) => {
      state.lastError = e
    })
    client.on('ready', () => {
      state.lastError = undefined
    })
    health.set(client, state)
    h = state
  }
  return h
}

/** Resolves when the client can take a command; rejects with the connection error otherwise. */
function ready(client: Redis, h: Health): Promise<void> | undefined {
  const status = client.status
  // `wait` is a lazyConnect client: the first command connects it.
  if (status === 'ready' || status === 'wait') return undefined
  if (status === 'end')
    return Promise.reject(new Error('the ioredis client was closed (quit() or disconnect())'))
  if (h.lastError) return Promise.reject(h.lastError)
  // Shared, so calls that time out while connecting leave no listeners behind on the client.
  h.waiting ??= new Promise<void>((resolve, reject) => {
    const done = (): void => {
      client.off('ready', onReady)
      client.off('error', onError)
      client.off('end', onEnd)
    }
    const onReady = (): void => {
      done()
      resolve()
    }
    const onError = (e: Error): void => {
      done()
      reject(e)
    }
    const onEnd = (): void => onError(new Error('the ioredis client was closed'))
    client.once('ready', onReady)
    client.once('error', onError)
    client.once('end', onEnd)
  }).finally(() => {
    h.waiting = undefined
  })
  return h.waiting
}

/** Where the client connects, for error hints. */
export function address(client: Redis): string {
  const { host = '127.0.0.1', port = 6379, path } = client.options
  return path ? path : `${host}:${port}`
}

/**
 * Runs `fn` once the client is ready, within `timeout` ms in all; rejects with the driver error,
 * or a `TimeoutError`. `fn` is never started after the deadline.
 */
export function bounded<T>(
  client: Redis,
  timeout: number,
  what: string,
  fn: () => Promise<T>,
): Promise<T> {
  const waiting = ready(client, watch(client))
  // Plain callbacks rather than async/await and Promise.race: this wraps every command.
  return new Promise<T>((resolve, reject) => {
    let expired = false
    const timer = setTimeout(() => {
      expired = true
      reject(new TimeoutError(what, timeout))
    }, timeout)
    const fail = (e: unknown): void => {
      clearTimeout(timer)
      reject(e)
    }
    const start = (): void => {
      // Never send after the caller was told this failed: that would be a write nobody expects.
      if (expired) return
      try {
        fn().then((value) => {
          clearTimeout(timer)
          resolve(value)
        }, fail)
      } catch (e) {
        fail(e)
      }
    }
    if (waiting === undefined) start()
    else waiting.then(start, fail)
  })
}

/** {@link bounded}, with failures as `StorageError`s of one operation. */
export function call<T>(
  client: Redis,
  storage: string,
  timeout: number,
  operation: string,
  subject: string | undefined,
  fn: () => Promise<T>,
): Promise<T> {
  return bounded(client, timeout, `redis ${operation}`, fn).catch((e: unknown) => {
    throw wrap(e, client, storage, operation, subject)
  })
}

/** A driver failure as a StorageError that says where Redis was expected. */
export function wrap(
  e: unknown,
  client: Redis,
  storage: string,
  operation: string,
  subject: string | undefined,
): Error {
  if (e instanceof StorageError) return e
  const message = e instanceof Error ? e.message : String(e)
  // A ReplyError is Redis answering (a script or type error): the server is there.
  const hint =
    e instanceof Error && e.name === 'ReplyError'
      ? ''
      : ` (is Redis running at ${address(client)}?)`
  return new StorageError(storage, operation, subject, message + hint, { cause: e })
}
