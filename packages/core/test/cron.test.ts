/**
 * Cron in time zones, on the days daylight-saving time starts and ends (Europe/Rome:
 * 2026-03-29 02:00 → 03:00, 2026-10-25 03:00 → 02:00; America/New_York: 2026-03-08 02:00 →
 * 03:00, 2026-11-01 02:00 → 01:00), names, macros and seconds.
 */
import { createContainer } from '@substate/core'
import { expect, it } from 'vitest'
import { nextTick, type ScheduleSpec } from '../src/cron.js'

/** The next `n` ticks strictly after `from`, as ISO strings (UTC). */
function ticks(spec: ScheduleSpec, from: string, n: number): string[] {
  const next = nextTick(spec)
  const out: string[] = []
  let t = Date.parse(from)
  for (let i = 0; i < n; i++) {
    t = next(t)
    out.push(new Date(t).toISOString().replace('.000Z', 'Z'))
  }
  return out
}

it('a daily time in Europe/Rome keeps its wall-clock time across both changes', () => {
  // 09:00 is 08:00Z in winter (CET, +1) and 07:00Z in summer (CEST, +2).
  expect(ticks({ cron: '0 9 * * *', tz: 'Europe/Rome' }, '2026-03-28T00:00:00Z', 3)).toEqual([
    '2026-03-28T08:00:00Z',
    '2026-03-29T07:00:00Z',
    '2026-03-30T07:00:00Z',
  ])
  expect(ticks({ cron: '0 9 * * *', tz: 'Europe/Rome' }, '2026-10-24T00:00:00Z', 3)).toEqual([
    '2026-10-24T07:00:00Z',
    '2026-10-25T08:00:00Z',
    '2026-10-26T08:00:00Z',
  ])
})

it('spring forward: a time in the skipped hour runs once, at the end of the gap', () => {
  // Rome: 02:30 does not exist on 2026-03-29; it runs at 03:00 CEST (01:00Z), once.
  expect(ticks({ cron: '30 2 * * *', tz: 'Europe/Rome' }, '2026-03-28T00:00:00Z', 3)).toEqual([
    '2026-03-28T01:30:00Z',
    '2026-03-29T01:00:00Z',
    '2026-03-30T00:30:00Z',
  ])
  // New York: 02:30 does not exist on 2026-03-08; it runs at 03:00 EDT (07:00Z).
  expect(ticks({ cron: '30 2 * * *', tz: 'America/New_York' }, '2026-03-07T00:00:00Z', 3)).toEqual([
    '2026-03-07T07:30:00Z',
    '2026-03-08T07:00:00Z',
    '2026-03-09T06:30:00Z',
  ])
  // A clock-following schedule skips the missing times: 01:30 CET, then 03:00 CEST.
  expect(ticks({ cron: '*/30 * * * *', tz: 'Europe/Rome' }, '2026-03-29T00:00:00Z', 3)).toEqual([
    '2026-03-29T00:30:00Z',
    '2026-03-29T01:00:00Z',
    '2026-03-29T01:30:00Z',
  ])
})

it('fall back: a time in the repeated hour runs once, at its first occurrence', () => {
  // Rome: 02:30 happens at 00:30Z (CEST) and 01:30Z (CET) on 2026-10-25: it runs at 00:30Z.
  expect(ticks({ cron: '30 2 * * *', tz: 'Europe/Rome' }, '2026-10-24T12:00:00Z', 2)).toEqual([
    '2026-10-25T00:30:00Z',
    '2026-10-26T01:30:00Z',
  ])
  // New York: 01:30 happens at 05:30Z (EDT) and 06:30Z (EST) on 2026-11-01.
  expect(ticks({ cron: '30 1 * * *', tz: 'America/New_York' }, '2026-10-31T12:00:00Z', 2)).toEqual([
    '2026-11-01T05:30:00Z',
    '2026-11-02T06:30:00Z',
  ])
  // A clock-following schedule runs in both occurrences: every 30 minutes of real time.
  expect(
    ticks({ cron: '*/30 * * * *', tz: 'America/New_York' }, '2026-11-01T05:00:00Z', 4),
  ).toEqual([
    '2026-11-01T05:30:00Z', // 01:30 EDT
    '2026-11-01T06:00:00Z', // 01:00 EST
    '2026-11-01T06:30:00Z', // 01:30 EST
    '2026-11-01T07:00:00Z', // 02:00 EST
  ])
  // An hourly schedule at minute 0 fires every real hour, 24 + 1 times that day in Rome.
  const day = ticks({ cron: '0 * * * *', tz: 'Europe/Rome' }, '2026-10-24T21:59:00Z', 26)
  expect(day.filter((t) => t < '2026-10-25T23:00:00Z')).toHaveLength(25)
})

it('reads names, macros, L and optional seconds; UTC by default', () => {
  expect(ticks({ cron: '0 9 * * MON-FRI' }, '2026-11-21T12:00:00Z', 1)).toEqual([
    '2026-11-23T09:00:00Z',
  ])
  expect(ticks({ cron: '0 0 1 jan,JUL *' }, '2026-02-01T00:00:00Z', 2)).toEqual([
    '2026-07-01T00:00:00Z',
    '2027-01-01T00:00:00Z',
  ])
  expect(ticks({ cron: '@daily', tz: 'Europe/Rome' }, '2026-03-28T12:00:00Z', 2)).toEqual([
    '2026-03-28T23:00:00Z', // midnight CET
    '2026-03-29T22:00:00Z', // midnight CEST
  ])
  expect(ticks({ cron: '@hourly' }, '2026-01-01T00:30:00Z', 1)).toEqual(['2026-01-01T01:00:00Z'])
  expect(ticks({ cron: '@weekly' }, '2026-01-01T00:00:00Z', 1)).toEqual(['2026-01-04T00:00:00Z'])
  expect(ticks({ cron: '@monthly' }, '2026-01-15T00:00:00Z', 1)).toEqual(['2026-02-01T00:00:00Z'])
  expect(ticks({ cron: '@yearly' }, '2026-01-15T00:00:00Z', 1)).toEqual(['2027-01-01T00:00:00Z'])
  expect(ticks({ cron: '0 18 L * *' }, '2026-02-01T00:00:00Z', 1)).toEqual(['2026-02-28T18:00:00Z'])
  expect(ticks({ cron: '*/20 * * * * *' }, '2026-01-01T00:00:05Z', 3)).toEqual([
    '2026-01-01T00:00:20Z',
    '2026-01-01T00:00:40Z',
    '2026-01-01T00:01:00Z',
  ])
  // Strictly after: a tick exactly at `after` is not returned again.
  expect(ticks({ cron: '0 * * * *' }, '2026-01-01T01:00:00Z', 1)).toEqual(['2026-01-01T02:00:00Z'])
})

it('every replica computes the same ticks, whatever its own time zone or start time', () => {
  // The next tick depends only on the schedule and the time asked about, not on process state.
  const a = nextTick({ cron: '30 2 * * *', tz: 'Europe/Rome' })
  const b = nextTick({ cron: '30 2 * * *', tz: 'Europe/Rome' })
  b(Date.parse('2030-01-01T00:00:00Z')) // a different history
  const at = Date.parse('2026-03-28T12:00:00Z')
  expect(a(at)).toBe(b(at))
})

it('rejects a bad time zone or expression at the call', () => {
  const c = createContainer()
  expect(() => c.schedule('t', { cron: '0 9 * * *', tz: 'Nowhere/City' })).toThrow(
    /time zone "Nowhere\/City"/,
  )
  expect(() => c.schedule('t', { cron: '0 9 * * *', tz: '' })).toThrow(TypeError)
  expect(() => c.schedule('t', { cron: '0 9 * * FUNDAY' })).toThrow(/invalid cron/)
  expect(() => c.schedule('t', { cron: '@sometimes' })).toThrow(/invalid cron/)
  expect(() => c.schedule('t', { cron: '0 0 0 1 1 * 2030' })).toThrow(/six with seconds first/)
})
