/*
 * Durable subject timers: `subject.schedule(type, { at } | { in }, payload)`. Timers are kept in
 * storage (one property per timer of the subject `substate:timers`), so they survive restarts and
 * are seen by every replica on that storage. A replica that polls finds the due ones, claims each
 * by compare-and-set (a lease, so a replica that dies mid-fire leaves it to another), fires it as
 * a unit of work and deletes it. The unit's commits carry the timer's id as idempotency key, so a
 * timer fired twice (a lease that expired mid-fire) has its effects stored once.
 */
import { randomUUID } from 'node:crypto'
import { copyJson, type JsonValue } from './json.js'
import type { SubjectStorage } from './storage.js'

/** When a timer fires: at a time (ms since the epoch, or a `Date`), or in `in` ms from now. */
export type TimerSpec = { readonly at: number | Date } | { readonly in: number }

/** A scheduled timer. */
export interface TimerHandle {
  /** Unique id; the fired event's `id` is `timer:<id>`. */
  readonly id: string
  /** When it is due (ms since the epoch). */
  readonly at: number
  /** Deletes the timer; resolves `false` when it had already fired (or was cancelled). */
  cancel(): Promise<boolean>
}

/** How a container fires durable timers. */
export interface TimerOptions {
  /** Longest time between two looks at storage for due timers, in ms. @default 1000 */
  readonly poll?: number
  /** How long a replica holds a timer it fires before another may fire it, in ms. @default 30_000 */
  readonly lease?: number
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
}

class TimerGone extends Error {}

const isRecord = (v: unknown): v is TimerRecord =>
  typeof v === 'object' &&
  v !== null &&
  typeof (v as TimerRecord).subject === 'string' &&
  typeof (v as TimerRecord).type === 'string' &&
  typeof (v as TimerRecord).at === 'number'

/** When a spec is due, checked (misuse throws a TypeError at the call). */
export function dueAt(when: TimerSpec): number {
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
    return Date.now() + ms
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
}

/** Stores, polls, claims and fires the durable timers of one container. */
export class Timers {
  readonly #host: TimerHost
  readonly #poll: number
  readonly #lease: number
  #timer: NodeJS.Timeout | undefined
  #nextPoll = Number.POSITIVE_INFINITY
  #running = false
  #stopped = false
  #polling: Promise<void> | undefined
  readonly #firing = new Set<Promise<void>>()

  constructor(host: TimerHost, { poll = 1000, lease = 30_000 }: TimerOptions = {}) {
    if (!(poll >= 1)) throw new TypeError(`timers.poll must be >= 1 ms, got ${poll}`)
    if (!(lease >= 1)) throw new TypeError(`timers.lease must be >= 1 ms, got ${lease}`)
    this.#host = host
    this.#poll = poll
    this.#lease = lease
  }

  async add(
    subject: string,
    type: string,
    when: TimerSpec,
    payload: unknown,
  ): Promise<TimerHandle> {
    if (typeof type !== 'string' || type === '')
      throw new TypeError(
        `schedule(): the event type must be a non-empty string, got ${JSON.stringify(type)}`,
      )
    const at = dueAt(when)
    const data = payload === undefined ? undefined : copyJson(payload, `the payload of ${type}`)
    const id = randomUUID()
    const record: TimerRecord =
      data === undefined ? { subject, type, at } : { subject, type, payload: data, at }
    const storage = this.#host.storageFor(TIMERS)
    await storage.commit(
      TIMERS,
      [{ op: 'set', kind: 'prop', name: `t:${id}`, value: record as unknown as JsonValue }],
      { oldValues: false },
    )
    this.start()
    this.#wake(at)
    return {
      id,
      at,
      cancel: async () => {
        const { changes } = await storage.commit(TIMERS, [
          { op: 'delete', kind: 'prop', name: `t:${id}` },
        ])
        return changes[0]?.oldValue !== undefined
      },
    }
  }

  /** Starts polling (once). */
  start(): void {
    if (this.#running || this.#stopped) return
    this.#running = true
    this.#wake(Date.now())
  }

  /** Stops polling and waits for the timers being fired. */
  async stop(): Promise<void> {
    this.#stopped = true
    clearTimeout(this.#timer)
    await this.#polling
    await Promise.allSettled([...this.#firing])
  }

  /** Polls at `at` if that is sooner than the next poll. */
  #wake(at: number): void {
    if (!this.#running || this.#stopped || at >= this.#nextPoll) return
    clearTimeout(this.#timer)
    this.#nextPoll = at
    this.#timer = setTimeout(
      () => {
        this.#nextPoll = Number.POSITIVE_INFINITY
        this.#polling = this.#pollOnce().finally(() => {
          this.#polling = undefined
        })
      },
      Math.max(0, at - Date.now()),
    )
  }

  async #pollOnce(): Promise<void> {
    const storage = this.#host.storageFor(TIMERS)
    let soonest = Date.now() + this.#poll
    try {
      const { props } = await storage.load(TIMERS)
      const now = Date.now()
      for (const [key, value] of Object.entries(props)) {
        if (!key.startsWith('t:') || !isRecord(value)) continue
        const due =
          value.claim !== undefined && value.claim.until > now ? value.claim.until : value.at
        if (due > now) soonest = Math.min(soonest, due)
        else this.#track(this.#fire(storage, key, value))
      }
    } catch (e) {
      this.#host.report('timers', TIMERS, 'poll', e)
    }
    this.#wake(soonest)
  }

  #track(p: Promise<void>): void {
    this.#firing.add(p)
    void p.finally(() => this.#firing.delete(p))
  }

  async #fire(storage: SubjectStorage, key: string, timer: TimerRecord): Promise<void> {
    if (this.#stopped) return
    const token = randomUUID()
    const lease = this.#lease
    try {
      const { changes } = await storage.commit(TIMERS, [
        {
          op: 'update',
          kind: 'prop',
          name: key,
          // Claimed by this replica unless another holds a live lease (or it already fired).
          update: (current) => {
            if (!isRecord(current)) throw new TimerGone()
            const stored: TimerRecord = current
            if (stored.claim !== undefined && stored.claim.until > Date.now()) return current
            const claimed: TimerRecord = { ...stored, claim: { token, until: Date.now() + lease } }
            return claimed as unknown as JsonValue
          },
        },
      ])
      const claimed = changes[0]?.newValue as TimerRecord | undefined
      if (claimed?.claim?.token !== token) return
    } catch (e) {
      if (e instanceof TimerGone || (e as { cause?: unknown })?.cause instanceof TimerGone) return
      this.#host.report('timers', timer.subject, timer.type, e)
      return
    }
    const id = key.slice(2)
    const done = await this.#host.fire({
      id: `timer:${id}`,
      type: timer.type,
      subject: timer.subject,
      payload: timer.payload,
      at: timer.at,
    })
    // Not done (a handler failed): the lease runs out and a replica fires it again.
    if (!done) return
    try {
      await storage.commit(TIMERS, [{ op: 'delete', kind: 'prop', name: key }], {
        oldValues: false,
      })
    } catch (e) {
      // Fired, but still stored: when it fires again its effects are duplicates (idempotency key).
      this.#host.report('timers', timer.subject, timer.type, e)
    }
  }
}
