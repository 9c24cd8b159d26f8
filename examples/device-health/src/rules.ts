/**
 * The KRules device-health example: metrics → health → alerts on transitions.
 *
 * Layer 1 derives `health` from `cpu`, `memory` and `error_rate`. Layer 2 reacts to health
 * transitions with alert events. Layer 3 reacts to alerts. Each layer only knows the events of the
 * layer below it.
 */
import { type Container, type EventContext, SUBJECT_PROPERTY_CHANGED } from '@substate/core'

/** Payload of `device.metrics`, the event a device (or the HTTP receiver) sends. */
export interface DeviceMetrics {
  readonly cpu?: number
  readonly memory?: number
  readonly error_rate?: number
}

export type Health = 'healthy' | 'warning' | 'critical'

const METRICS = ['cpu', 'memory', 'error_rate'] as const

/** The health rule: what `health` must be for these metrics (a missing one counts as 0). */
export function healthOf({ cpu = 0, memory = 0, error_rate: errors = 0 }: DeviceMetrics): Health {
  return cpu > 90 || memory > 90 || errors > 10
    ? 'critical'
    : cpu > 70 || memory > 70 || errors > 5
      ? 'warning'
      : 'healthy'
}

/**
 * Registers the rules on `container`; `log` receives one line per reaction. The lines come from
 * `events$`, which carries a unit of work's events once it committed: a handler may run again
 * (a conflict with another replica), so handlers only compute and write, never print.
 */
export function deviceHealthRules(container: Container, log: (line: string) => void): void {
  const { on, when } = container.handlers()
  container.select(SUBJECT_PROPERTY_CHANGED).subscribe((e) => {
    if (e.propertyName === 'health' && e.subject.startsWith('device:'))
      log(`${e.subject}: health ${String(e.oldValue ?? '(none)')} → ${String(e.newValue)}`)
  })
  container.select('device.alert.*').subscribe((e) => {
    log(
      `${e.subject}: ALERT ${e.type}${e.payload === undefined ? '' : ` ${JSON.stringify(e.payload)}`}`,
    )
  })
  const isDevice = when((ctx: EventContext) => ctx.subject.name.startsWith('device:'))

  // Ingress: a metrics event sets the metric properties it carries.
  on('device.metrics', isDevice, async (ctx) => {
    const metrics = (ctx.payload ?? {}) as DeviceMetrics
    for (const name of METRICS) {
      const value = metrics[name]
      if (typeof value === 'number') await ctx.subject.set(name, value)
    }
  })

  // Layer 1: derive health from the metrics.
  on(
    SUBJECT_PROPERTY_CHANGED,
    isDevice,
    when((ctx) => (METRICS as readonly string[]).includes(ctx.propertyName ?? '')),
    async function computeHealth(ctx) {
      const device = ctx.subject
      const cpu = await device.get<number>('cpu', { default: 0 })
      const memory = await device.get<number>('memory', { default: 0 })
      const errors = await device.get<number>('error_rate', { default: 0 })
      await device.set('health', healthOf({ cpu, memory, error_rate: errors }))
    },
  )

  // Layer 2: react to health transitions.
  on(
    SUBJECT_PROPERTY_CHANGED,
    isDevice,
    when((ctx) => ctx.propertyName === 'health'),
    async function onHealthChange(ctx) {
      if (ctx.newValue === 'critical') {
        await ctx.emit('device.alert.critical', {
          cpu: await ctx.subject.get('cpu', { default: null }),
        })
      } else if (ctx.newValue === 'healthy' && ctx.oldValue === 'critical') {
        await ctx.emit('device.alert.recovered')
      }
    },
  )

  // Layer 3: alerts.
  on('device.alert.*', async function onAlert(ctx) {
    await ctx.subject.set('alerts', (n = 0) => n + 1)
  })
}
