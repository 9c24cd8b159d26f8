/**
 * When scheduled events fire: `{ every: ms }` on multiples of `every` since the epoch, or
 * `{ cron, tz }` evaluated by croner in a time zone (UTC by default). Both are pure functions of
 * the time, so every replica computes the same ticks (given the same time-zone data).
 */
import { Cron } from 'croner'

/**
 * A schedule: a fixed period in milliseconds, or a cron expression in a time zone.
 *
 * `cron` has five fields (`minute hour day-of-month month day-of-week`), or six with seconds
 * first; fields take `*`, numbers, ranges `a-b`, steps `/n`, lists, month and day names (`JAN`,
 * `mon-fri`), `L` (last day of the month), or is a macro: `@yearly`, `@monthly`, `@weekly`,
 * `@daily`, `@hourly`. When both day fields are restricted (neither starts with `*`), a day
 * matching either runs, as in Vixie cron.
 *
 * `tz` is an IANA time zone (`Europe/Rome`). Across daylight-saving changes, a fixed-time
 * schedule (no `*` or step in its second, minute and hour fields, e.g. `30 2 * * *`) runs once a
 * day: a time skipped by the spring-forward change runs at the first time after the gap, a time
 * repeated by the fall-back change runs at its first occurrence. Other schedules (`*\/15 * * * *`)
 * follow the clock: they skip the missing times and run in both occurrences of the repeated hour.
 */
export type ScheduleSpec =
  | { readonly every: number }
  | {
      readonly cron: string
      /** An IANA time zone. @default 'UTC' */
      readonly tz?: string
    }

/** The first tick strictly after `after` (ms since the epoch). */
export type NextTick = (after: number) => number

export function nextTick(spec: ScheduleSpec): NextTick {
  if (spec !== null && typeof spec === 'object' && 'every' in spec) {
    const { every } = spec
    if (!(typeof every === 'number' && Number.isInteger(every) && every >= 1))
      throw new TypeError(
        `schedule(): every must be a whole number of milliseconds >= 1, got ${every}`,
      )
    return (after) => (Math.floor(after / every) + 1) * every
  }
  if (spec !== null && typeof spec === 'object' && 'cron' in spec)
    return cron(spec.cron, spec.tz ?? 'UTC')
  throw new TypeError(
    "schedule(): the schedule must be { every: ms } or { cron: 'm h dom mon dow', tz? }",
  )
}

function cron(expression: string, tz: string): NextTick {
  if (typeof expression !== 'string')
    throw new TypeError('schedule(): cron must be a string of five or six fields, or a macro')
  if (typeof tz !== 'string' || tz === '')
    throw new TypeError(`schedule(): tz must be an IANA time zone name, got ${JSON.stringify(tz)}`)
  const text = expression.trim()
  const parts = text.split(/\s+/)
  const macro = parts.length === 1 && text.startsWith('@')
  if (!macro && parts.length !== 5 && parts.length !== 6)
    throw new TypeError(
      `schedule(): invalid cron "${expression}": expected five fields (minute hour day-of-month month day-of-week), six with seconds first, or a macro like @daily`,
    )
  // Vixie cron: both day fields must match unless both are restricted (neither starts with `*`).
  const [dom, dow] =
    parts.length === 6 ? [parts[3]!, parts[5]!] : [parts[2] ?? '*', parts[4] ?? '*']
  let job: Cron
  try {
    job = new Cron(text, {
      paused: true,
      timezone: tz,
      mode: '5-or-6-parts',
      domAndDow: dom.startsWith('*') || dow.startsWith('*'),
      fixedTimeRule: 'no-wildcard',
    })
  } catch (e) {
    throw new TypeError(`schedule(): invalid cron "${expression}": ${message(e)}`, { cause: e })
  }
  return (after) => {
    let next: Date | null
    try {
      next = job.nextRun(new Date(after))
    } catch (e) {
      throw new TypeError(`schedule(): cron "${expression}" in time zone "${tz}": ${message(e)}`, {
        cause: e,
      })
    }
    if (next === null) throw new TypeError(`schedule(): cron "${expression}" never matches`)
    return next.getTime()
  }
}

/** croner's message, without its class prefix (`CronPattern: `). */
const message = (e: unknown): string => String((e as Error)?.message ?? e).replace(/^Cron\w*: /, '')
