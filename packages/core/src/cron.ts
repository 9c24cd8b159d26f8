/**
 * When scheduled events fire: `{ every: ms }` on multiples of `every` since the epoch (so every
 * replica computes the same ticks), or `{ cron: 'm h dom mon dow' }` in UTC.
 */

/** A schedule: a fixed period in milliseconds, or a five-field cron expression (UTC). */
export type ScheduleSpec = { readonly every: number } | { readonly cron: string }

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
  if (spec !== null && typeof spec === 'object' && 'cron' in spec) return cron(spec.cron)
  throw new TypeError(
    "schedule(): the schedule must be { every: ms } or { cron: 'm h dom mon dow' }",
  )
}

const FIELDS = [
  { name: 'minute', min: 0, max: 59 },
  { name: 'hour', min: 0, max: 23 },
  { name: 'day of month', min: 1, max: 31 },
  { name: 'month', min: 1, max: 12 },
  { name: 'day of week', min: 0, max: 7 },
] as const

/** Parses one cron field (`*`, `5`, `1-5`, `*\/15`, `1-30/2`, lists of these) into a set. */
function field(text: string, { name, min, max }: (typeof FIELDS)[number]): Set<number> {
  const out = new Set<number>()
  const bad = (why: string): TypeError =>
    new TypeError(`schedule(): invalid cron ${name} "${text}": ${why}`)
  for (const part of text.split(',')) {
    const m = /^(\*|(\d+)(?:-(\d+))?)(?:\/(\d+))?$/.exec(part)
    if (!m) throw bad('expected *, a number, a range a-b, or a step /n')
    const step = m[4] === undefined ? 1 : Number(m[4])
    const from = m[1] === '*' ? min : Number(m[2])
    const to =
      m[1] === '*' ? max : m[3] === undefined ? (m[4] === undefined ? from : max) : Number(m[3])
    if (step < 1) throw bad('a step must be >= 1')
    if (from < min || to > max || from > to) throw bad(`values must be within ${min}-${max}`)
    for (let v = from; v <= to; v += step) out.add(v)
  }
  return out
}

function cron(expression: string): NextTick {
  if (typeof expression !== 'string')
    throw new TypeError('schedule(): cron must be a string of five fields')
  const parts = expression.trim().split(/\s+/)
  if (parts.length !== 5)
    throw new TypeError(
      `schedule(): invalid cron "${expression}": expected five fields (minute hour day-of-month month day-of-week)`,
    )
  const [minute, hour, dom, month, dow] = parts.map((p, i) => field(p, FIELDS[i]!)) as [
    Set<number>,
    Set<number>,
    Set<number>,
    Set<number>,
    Set<number>,
  ]
  if (dow.has(7)) dow.add(0) // 7 is Sunday too
  // As in (Vixie) cron: when both day fields are restricted (neither starts with `*`), a day
  // matching either one runs; otherwise a day must match both.
  const either = !parts[2]!.startsWith('*') && !parts[4]!.startsWith('*')
  const dayMatches = (d: Date): boolean => {
    const byDom = dom.has(d.getUTCDate())
    const byDow = dow.has(d.getUTCDay())
    return either ? byDom || byDow : byDom && byDow
  }
  return (after) => {
    const d = new Date(after)
    d.setUTCSeconds(0, 0)
    d.setUTCMinutes(d.getUTCMinutes() + 1) // strictly after `after`
    // Jump by month, day, hour or minute to the next candidate; nine years cover every match
    // (29 February can be eight years away, around 2100).
    const limit = after + 9 * 366 * 86_400_000
    while (d.getTime() <= limit) {
      if (!month.has(d.getUTCMonth() + 1)) {
        d.setUTCMonth(d.getUTCMonth() + 1, 1)
        d.setUTCHours(0, 0, 0, 0)
      } else if (!dayMatches(d)) {
        d.setUTCDate(d.getUTCDate() + 1)
        d.setUTCHours(0, 0, 0, 0)
      } else if (!hour.has(d.getUTCHours())) {
        d.setUTCHours(d.getUTCHours() + 1, 0, 0, 0)
      } else if (!minute.has(d.getUTCMinutes())) {
        d.setUTCMinutes(d.getUTCMinutes() + 1, 0, 0)
      } else return d.getTime()
    }
    throw new TypeError(`schedule(): cron "${expression}" never matches`)
  }
}
