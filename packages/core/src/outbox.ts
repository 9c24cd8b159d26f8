/*
 * The outbox relay (DESIGN §3.13): outbound events a unit of work emitted leave only after it
 * committed, and only those of its final run. With a storage that keeps an outbox, the unit's
 * commit wrote them there in the same atomic operation; the relay sends them at once and deletes
 * them once delivered. What fails to go out stays in the outbox: every container relaying that
 * storage claims it again once its lease ran out, so a crash between commit and send loses
 * nothing. Sends are at least once; their CloudEvents ids are deterministic, so a deduplicating
 * receiver applies them once.
 */
import { randomUUID } from 'node:crypto'
import { type Clock, type ClockTimer, systemClock, unref } from './clock.js'
import type { Logger } from './logger.js'
import type { OutboxMessage, SubjectStorage } from './storage.js'
import type { Subject, SubstateEvent } from './types.js'
import type { HeldSend, OutboxBody, OutboxTarget } from './unit-state.js'

/** Options of the outbox relay. */
export interface OutboxOptions {
  /** How often the outbox is looked at for messages nobody is sending, in ms. @default 1_000 */
  readonly poll?: number
  /**
   * How long a process holds an outbox message it sends before another may send it (also the
   * delay before a failed send is tried again), in ms. @default 30_000
   */
  readonly lease?: number
}

/** What the relay needs of its container. */
export interface OutboxHost {
  /** The delivery function of a route or target, or `undefined` when this process has none. */
  resolve(
    target: OutboxTarget,
    event: SubstateEvent,
  ): ((e: SubstateEvent, s: Subject) => Promise<void>) | undefined
  subject(name: string): Subject
  /** Reports a failed delivery (it will be tried again). */
  report(what: string, event: SubstateEvent, error: unknown): void
  /** Where the relay logs a storage it cannot reach, and when it can again. */
  readonly log?: Logger
  /** Times the polls. @default the system clock */
  readonly clock?: Clock
}

/** Sends what committed units hold, and what the outbox of a storage still holds. */
export class OutboxRelay {
  readonly #host: OutboxHost
  readonly #poll: number
  readonly #lease: number
  /** This process, as owner of the outbox messages it commits and claims. */
  readonly owner: string = randomUUID()
  readonly #inflight = new Set<Promise<void>>()
  /** Storages whose outbox this relay polls. */
  readonly #storages = new Set<SubjectStorage>()
  /** Storages whose last claim failed (logged once, until a claim succeeds). */
  readonly #down = new Set<SubjectStorage>()
  #timer: ClockTimer | undefined
  #polling = false
  #stopped = false
  /** Ids to delete per storage, batched. */
  readonly #done = new Map<SubjectStorage, string[]>()
  #flushing: Promise<void> | undefined

  constructor(host: OutboxHost, { poll = 1_000, lease = 30_000 }: OutboxOptions = {}) {
    if (!(poll >= 1)) throw new TypeError(`outbox.poll must be >= 1 ms, got ${poll}`)
    if (!(lease >= 1)) throw new TypeError(`outbox.lease must be >= 1 ms, got ${lease}`)
    this.#host = host
    this.#poll = poll
    this.#lease = lease
  }

  get lease(): number {
    return this.#lease
  }

  /** Sends the held sends of a committed unit (`stored`: they are in `storage`'s outbox). */
  sendCommitted(
    sends: readonly HeldSend[],
    storage: SubjectStorage,
    stored: boolean,
  ): Promise<void> {
    if (stored && storage.outbox !== undefined) this.watch(storage)
    const tries: Promise<void>[] = []
    for (const s of sends) {
      tries.push(
        this.#track(
          s.send().then(
            () => {
              if (stored) this.#remove(storage, s.message.id)
            },
            (e: unknown) => {
              // Stored: another look at the outbox sends it once the lease ran out.
              this.#host.report(`route:${s.emitter.name}`, s.event, e)
            },
          ),
        ),
      )
    }
    return Promise.all(tries).then(() => undefined)
  }

  /** Starts polling a storage's outbox for messages nobody is sending (once per storage). */
  watch(storage: SubjectStorage): void {
    if (storage.outbox === undefined || this.#stopped || this.#storages.has(storage)) return
    this.#storages.add(storage)
    this.#arm()
  }

  #arm(): void {
    if (this.#timer !== undefined || this.#stopped) return
    this.#timer = (this.#host.clock ?? systemClock).setTimeout(() => {
      this.#timer = undefined
      void this.#pollOnce().finally(() => this.#arm())
    }, this.#poll)
    unref(this.#timer)
  }

  async #pollOnce(): Promise<void> {
    if (this.#polling) return
    this.#polling = true
    try {
      for (const storage of this.#storages) {
        if (this.#stopped) return
        let claimed: readonly OutboxMessage[]
        try {
          claimed = await storage.outbox!.claim(this.owner, 100, this.#lease)
        } catch (err) {
          // Storage down: the next poll tries again.
          if (!this.#down.has(storage)) {
            this.#down.add(storage)
            this.#host.log?.warn(
              { storage: storage.name, err },
              'outbox relay: the storage is unreachable; undelivered messages wait',
            )
          }
          continue
        }
        if (this.#down.delete(storage))
          this.#host.log?.info(
            { storage: storage.name },
            'outbox relay: the storage is reachable again',
          )
        for (const m of claimed) void this.#track(this.#relay(storage, m))
      }
    } finally {
      this.#polling = false
    }
  }

  async #relay(storage: SubjectStorage, m: OutboxMessage): Promise<void> {
    let body: OutboxBody
    try {
      body = JSON.parse(m.body) as OutboxBody
    } catch {
      this.#remove(storage, m.id) // not ours, or corrupt: it would never go out
      return
    }
    const event = { ...body.event, extra: undefined } as SubstateEvent
    const send = this.#host.resolve(body.target, event)
    if (send === undefined) {
      this.#host.report(
        'outbox',
        event,
        new Error(
          `no route or target for outbox message ${m.id} in this process (${JSON.stringify(body.target)}): it stays in the outbox`,
        ),
      )
      return
    }
    try {
      await send(event, this.#host.subject(event.subject))
      this.#remove(storage, m.id)
    } catch (e) {
      this.#host.report('outbox', event, e)
    }
  }

  #remove(storage: SubjectStorage, id: string): void {
    let ids = this.#done.get(storage)
    if (ids === undefined) {
      ids = []
      this.#done.set(storage, ids)
    }
    ids.push(id)
    // One delete per storage for the sends that completed together.
    this.#flushing ??= Promise.resolve().then(() => this.#flushRemoved())
  }

  async #flushRemoved(): Promise<void> {
    this.#flushing = undefined
    const batches = [...this.#done]
    this.#done.clear()
    await Promise.all(
      batches.map(([storage, ids]) =>
        storage.outbox?.remove(ids).catch(() => {
          // Left in the outbox: sent again later with the same id (the receiver dedups it).
        }),
      ),
    )
  }

  #track(p: Promise<void>): Promise<void> {
    this.#inflight.add(p)
    void p.finally(() => this.#inflight.delete(p))
    return p
  }

  /** Messages waiting in the outboxes this relay watches (for metrics and the close report). */
  async pending(): Promise<number> {
    let n = 0
    for (const s of this.#storages) n += await s.outbox!.size().catch(() => 0)
    return n
  }

  /** Stops polling; waits for the sends in flight and the deletes they made. */
  async close(): Promise<void> {
    this.#stopped = true
    ;(this.#host.clock ?? systemClock).clearTimeout(this.#timer)
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight])
    await this.#flushing
    await this.#flushRemoved()
  }
}
