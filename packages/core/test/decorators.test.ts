import { createContainer, type EventContext, SUBJECT_PROPERTY_CHANGED } from '@substate/core'
import { expect, it } from 'vitest'

it('registers TC39-decorated methods with filters, bound to the instance', async () => {
  const c = createContainer()
  const { on, when, emit } = c.handlers()
  const isProduction = (ctx: EventContext) => ctx.subject.name.startsWith('prod:')

  class DeviceRules {
    readonly seen: string[] = []

    @on('device.*')
    @when(isProduction)
    async alert(ctx: EventContext) {
      this.seen.push(`alert ${ctx.type} ${ctx.subject.name}`)
    }

    @when((ctx: EventContext) => ctx.propertyName === 'cpu')
    @on(SUBJECT_PROPERTY_CHANGED, { name: 'cpuWatch' })
    async cpu(ctx: EventContext) {
      this.seen.push(`cpu ${String(ctx.newValue)}`)
    }

    notAHandler() {}
  }

  const rules = new DeviceRules()
  const off = c.register(rules)
  await emit('device.alert.critical', 'prod:1')
  await emit('device.alert.critical', 'dev:1')
  await c.subject('prod:1').set('cpu', 93)
  await c.subject('prod:1').set('mem', 1)
  expect(rules.seen).toEqual(['alert device.alert.critical prod:1', 'cpu 93'])
  expect(Object.keys(c.metrics.snapshot())).toContain('DeviceRules.cpuWatch')
  off()
  await emit('device.alert.critical', 'prod:1')
  expect(rules.seen).toHaveLength(2)
  expect(() => c.register({})).toThrow(TypeError)
})
