/*
 * Durable subject timers: `subject.schedule(type, { at } | { in }, payload)`. Timers are kept in
 * storage (one property per timer of the subject `substate:timers`), so they survive restarts and
 * are seen by every replica on that storage. A replica that polls finds the due ones, claims each
 * by compare-and-set (a lease, so a replica that dies mid-fire leaves it to another), fires it as
 * a unit of work and deletes it. The unit's commits carry the timer's id as idempotency key, so a
 * timer fired twice (a lease that expired mid-fire) has its effects stored once.
 */
import { randomUUID } from 'node:crypto'
import { type Clock, type ClockTimer, systemClock } from './clock.js'
import { copyJson, type JsonValue } from './json.js'
import type { SubjectStorage } from './storage.js'
import type { TimerHandle, TimerSpec } from './types.js'

export type { TimerHandle, TimerSpec } from './types.js'

/** How a container fires durable timers. */
export interface TimerOptions {
  /** Longest time between two looks at storage for due timers, in ms. @default 1000 */
  readonly poll?: number
  /**
   * How long a replica's claim on a timer it fires lasts before another may fire it, in ms; the
   * replica renews it while the timer's handlers run. @default 30_000
   */
  readonly lease?: number
  /** Fires of a timer whose handlers keep failing before it is dropped (and reported). @default 10 */
  readonly attempts?: number
  /** Timers this container fires at once. @default 64 */
  readonly concurrency?: number
}

/** The subject holding every timer of a storage. */
export const TIMERS = 'substate:timers'
/** `source` of the events timers fire (the same on every replica, so they dedupe). */
export const TIMER_SOURCE = 'substate/timer'

/** A timer as stored. */
interface TimerRecord {
  readonly subject: string
  readonly type: string
  readonly payload?: JsonValue
  readonly at: number
  /** Set by the replica firing it, until `until`. */
  readonly claim?: { readonly token: string; readonly until: number }
  /** How many times it was claimed to be fired. */
  readonly attempts?: number
}

class TimerGone extends Error {}

const nonEmpty = (v: unknown): boolean => typeof v === 'string' && v !== ''
const isRecord = (v: unknown): v is TimerRecord =>
  typeof v === 'object' &&
  v !== null &&
  nonEmpty((v as TimerRecord).subject) &&
  nonEmpty((v as TimerRecord).type) &&
  typeof (v as TimerRecord).at === 'number'

/** When a spec is due, checked (misuse throws a TypeError at the call). */
export function dueAt(when: TimerSpec, now: () => number): number {
  if (when !== null && typeof when === 'object' && 'at' in when) {
    const at = when.at instanceof Date ? when.at.getTime() : when.at
    if (typeof at !== 'number' || !Number.isFinite(at))
      throw new TypeError(
        `schedule(): at must be a Date or ms since the epoch, got ${String(when.at)}`,
      )
    return at
  }
  if (when !== null && typeof when === 'object' && 'in' in when) {
    const ms = when.in
    if (!(typeof ms === 'number' && ms >= 0 && Number.isFinite(ms)))
      throw new TypeError(`schedule(): in must be a number of milliseconds >= 0, got ${ms}`)
    return now() + ms
  }
  throw new TypeError('schedule(): the timer must be { at: Date | ms } or { in: ms }')
}

/** What the timer service needs of its container. */
export interface TimerHost {
  storageFor(subject: string): SubjectStorage
  /** Handles a fired timer as a unit of work; resolves whether it is done (handled or duplicate). */
  fire(event: {
    id: string
    type: string
    subject: string
    payload: JsonValue | undefined
    at: number
  }): Promise<boolean>
  /** Reports a failure that belongs to no event handler. */
  report(what: string, subject: string, type: string, error: unknown): void
  /** When timers are due, and the timers that poll for them. @default the system clock */
  readonly clock?: Clock
}

/** Stores, polls, claims and fires the durable timers of one container. */
export class Timers {
  readonly #host: TimerHost
  readonly #poll: number
  readonly #lease: number
  readonly #attempts: number
  readonly #concurrency: number
  readonly #clock: Clock
  #timer: ClockTimer | undefined
  #nextPoll = Number.POSITIVE_INFINITY
  #running = false
  #stopped = false
  #polling: Promise<void> | undefined
  readonly #firing = new Set<Promise<void>>()

  constructor(
    host: TimerHost,
    { poll = 1000, lease = 30_000, attempts = 10, concurrency = 64 }: TimerOptions = {},
  ) {
    if (!(poll >= 1)) throw new TypeError(`timers.poll must be >= 1 ms, got ${poll}`)
    if (!(lease >= 1)) throw new TypeError(`timers.lease must be >= 1 ms, got ${lease}`)
    if (!(attempts >= 1)) throw new TypeError(`timers.attempts must be >= 1, got ${attempts}`)
    if (!(concurrency >= 1))
      throw new TypeError(`timers.concurrency must be >= 1, got ${concurrency}`)
    this.#host = host
    this.#poll = poll
    this.#lease = lease
    this.#attempts = attempts
    this.#concurrency = concurrency
    this.#clock = host.clock ?? systemClock
  }

  async add(
    subject: string,
    type: string,
    when: TimerSpec,
    payload: unknown,
  ): Promise<TimerHandle> {
    const { key, record, handle } = this.prepare(subject, type, when, payload)
    await this.#host
      .storageFor(TIMERS)
      .commit(TIMERS, [{ op: 'set', kind: 'prop', name: key, value: record }], {
        oldValues: false,
      })
    this.stored(handle.at)
    return handle
  }

  /**
   * A timer ready to store: the property of `substate:timers` to set to `record` (a unit of work
   * writes it in its commit), and its handle. Call {@link stored} once it is stored.
   */
  prepare(
    subject: string,
    type: string,
    when: TimerSpec,
    payload: unknown,
  ): { key: string; record: JsonValue; handle: TimerHandle } {
    if (typeof type !== 'string' || type === '')
      throw new TypeError(
        `schedule(): the event type must be a non-empty string, got ${JSON.stringify(type)}`,
      )
    const at = dueAt(when, () => this.#clock.now())
    const data = payload === undefined ? undefined : copyJson(payload, `the payload of ${type}`)
    const id = randomUUID()
    const record: TimerRecord =
      data === undefined ? { subject, type, at } : { subject, type, payload: data, at }
    const storage = this.#host.storageFor(TIMERS)
    const key = `t:${id}`
    return {
      key,
      record: record as unknown as JsonValue,
      handle: {
        id,
        at,
        cancel: async () => {
          const { changes } = await storage.commit(TIMERS, [
            { op: 'delete', kind: 'prop', name: key },
          ])
          return changes[0]?.oldValue !== undefined
        },
      },
    }
  }

  /** A timer due `at` was stored: poll for it in time. */
  stored(at: number): void {
    this.start()
    this.#wake(at)
  }

  /** Starts polling (once). */
  start(): void {
    if (this.#running || this.#stopped) return
    this.#running = true
    this.#wake(this.#clock.now())
  }

  /**
   * Stops polling (and claiming); resolves once the poll in progress ended. Timers being fired
   * go on: {@link idle} waits for them.
   */
  async stop(): Promise<void> {
    this.#stopped = true
    this.#clock.clearTimeout(this.#timer)
    await this.#polling
  }

  /** Resolves once the timers being fired are done (handled and deleted, or failed). */
  async idle(): Promise<void> {
    await Promise.allSettled([...this.#firing])
  }

  /** Polls at `at` if that is sooner than the next poll. */
  #wake(at: number): void {
    if (!this.#running || this.#stopped || at >= this.#nextPoll) return
    this.#clock.clearTimeout(this.#timer)
    this.#nextPoll = at
    this.#timer = this.#clock.setTimeout(
      () => {
        this.#nextPoll = Number.POSITIVE_INFINITY
        // One poll at a time: a wake during a poll polls again right after it.
        if (this.#polling) {
          void this.#polling.then(() => this.#wake(this.#clock.now()))
          return
        }
        this.#polling = this.#pollOnce().finally(() => {
          this.#polling = undefined
        })
      },
      Math.max(0, Math.min(at - this.#clock.now(), this.#poll)),
    )
  }

  async #pollOnce(): Promise<void> {
    const storage = this.#host.storageFor(TIMERS)
    let soonest = this.#clock.now() + this.#poll
    try {
      const { props } = await storage.load(TIMERS)
      const now = this.#clock.now()
      for (const [key, value] of Object.entries(props)) {
        if (this.#stopped) break
        if (!key.startsWith('t:') || !isRecord(value)) continue
        const due =
          value.claim !== undefined && value.claim.until > now ? value.claim.until : value.at
        if (due > now) soonest = Math.min(soonest, due)
        // At most `concurrency` at once: the rest wait for the next poll, unclaimed (a claim
        // made long before its fire would run out while it waits).
        else if (this.#firing.size < this.#concurrency) this.#track(this.#fire(storage, key, value))
        else soonest = Math.min(soonest, now + Math.min(this.#poll, 50))
      }
    } catch (e) {
      this.#host.report('timers', TIMERS, 'poll', e)
    }
    this.#wake(soonest)
  }

  #track(p: Promise<void>): void {
    const done = p.catch((e: unknown) => this.#host.report('timers', TIMERS, 'fire', e))
    this.#firing.add(done)
    void done.finally(() => {
      this.#firing.delete(done)
    })
  }

  /** Sets the claim of `key` to `token` until `until`, unless another replica holds it. */
  #claim(
    storage: SubjectStorage,
    key: string,
    token: string,
    renew: boolean,
  ): Promise<TimerRecord | undefined> {
    const lease = this.#lease
    return storage
      .commit(TIMERS, [
        {
          op: 'update',
          kind: 'prop',
          name: key,
          update: (current) => {
            if (!isRecord(current)) throw new TimerGone()
            const stored: TimerRecord = current
            const held = stored.claim !== undefined && stored.claim.until > this.#clock.now()
            // A renewal keeps only this replica's own claim; a first claim needs none held.
            if (renew ? stored.claim?.token !== token : held) return current
            const claimed: TimerRecord = {
              ...stored,
              claim: { token, until: this.#clock.now() + lease },
              attempts: renew ? (stored.attempts ?? 1) : (stored.attempts ?? 0) + 1,
            }
            return claimed as unknown as JsonValue
          },
        },
      ])
      .then(({ changes }) => {
        const record = changes[0]?.newValue as TimerRecord | undefined
        return record?.claim?.token === token ? record : undefined
      })
  }

  async #fire(storage: SubjectStorage, key: string, timer: TimerRecord): Promise<void> {
    if (this.#stopped) return
    const token = randomUUID()
    let claimed: TimerRecord | undefined
    try {
      claimed = await this.#claim(storage, key, token, false)
    } catch (e) {
      if (e instanceof TimerGone || (e as { cause?: unknown })?.cause instanceof TimerGone) return
      this.#host.report('timers', timer.subject, timer.type, e)
      return
    }
    if (claimed === undefined) return
    // The claim is renewed while the handlers run, so a slow handler keeps it.
    let renew: ClockTimer | undefined
    const renewSoon = (): void => {
      renew = this.#clock.setTimeout(() => {
        this.#claim(storage, key, token, true).catch(() => undefined)
        renewSoon()
      }, this.#lease / 3)
    }
    renewSoon()
    let done: boolean
    try {
      done = await this.#host.fire({
        id: `timer:${key.slice(2)}`,
        type: claimed.type,
        subject: claimed.subject,
        payload: claimed.payload,
        at: claimed.at,
      })
    } finally {
      this.#clock.clearTimeout(renew)
    }
    const attempts = claimed.attempts ?? 1
    if (!done && attempts < this.#attempts) return // fired again once the claim runs out
    if (!done) {
      this.#host.report(
        'timers',
        claimed.subject,
        claimed.type,
        new Error(`timer ${key.slice(2)} failed ${attempts} times: dropped`),
      )
    }
    try {
      await storage.commit(TIMERS, [{ op: 'delete', kind: 'prop', name: key }], {
        oldValues: false,
      })
    } catch (e) {
      // Fired, but still stored: when it fires again its effects are duplicates (idempotency key).
      this.#host.report('timers', claimed.subject, claimed.type, e)
    }
  }
}
