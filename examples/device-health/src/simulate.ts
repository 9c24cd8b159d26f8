/** A short, scripted metric stream: two devices going through warning, critical and recovery. */
import type { DeviceMetrics } from './rules.js'

export const METRIC_STREAM: ReadonlyArray<readonly [device: string, metrics: DeviceMetrics]> = [
  ['device:prod-01', { cpu: 35, memory: 40, error_rate: 1 }],
  ['device:prod-02', { cpu: 20, memory: 30, error_rate: 0 }],
  ['device:prod-01', { cpu: 75 }],
  ['device:prod-01', { cpu: 95 }],
  ['device:prod-02', { error_rate: 12 }],
  ['device:prod-01', { cpu: 96 }], // still critical: no transition, no alert
  ['device:prod-01', { cpu: 50 }],
  ['device:prod-02', { error_rate: 2 }],
  ['device:prod-01', { cpu: 45 }], // healthy stays healthy: no event
]
