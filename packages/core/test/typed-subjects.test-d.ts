import {
  type Container,
  createContainer,
  type EventMap,
  type JsonValue,
  type Subject,
  type SubstateEvent,
  type TypedSubject,
} from '@substate/core'
import { expectTypeOf, test } from 'vitest'

type DeviceProps = { cpu: number; health: 'ok' | 'critical'; tags?: string[] }
interface OrderProps {
  total: number
  lines: { sku: string; qty: number }[]
}

test('subject<Props>(name) types get, set, updaters, delete, watch and changes$', async () => {
  const c = createContainer()
  const device = c.subject<DeviceProps>('device:1')
  expectTypeOf(device).toEqualTypeOf<TypedSubject<DeviceProps>>()
  expectTypeOf(await device.get('cpu')).toEqualTypeOf<number>()
  expectTypeOf(await device.get('health')).toEqualTypeOf<'ok' | 'critical'>()
  expectTypeOf(await device.get('tags', { default: [] })).toEqualTypeOf<string[]>()
  expectTypeOf(await device.set('cpu', 95)).toEqualTypeOf<number>()
  await device.set('cpu', (n = 0) => n + 1)
  await device.set('cpu', (n) => {
    expectTypeOf(n).toEqualTypeOf<number | undefined>()
    return (n ?? 0) + 1
  })
  await device.set('health', 'critical')
  await device.delete('tags')
  expectTypeOf(await device.keys()).toEqualTypeOf<('cpu' | 'health' | 'tags')[]>()
  device.watch('cpu').subscribe((v) => expectTypeOf(v).toEqualTypeOf<number | undefined>())
  device.changes$.subscribe((e) => {
    if (e.propertyName === 'health')
      expectTypeOf(e.newValue).toEqualTypeOf<'ok' | 'critical' | undefined>()
    expectTypeOf(e).toMatchTypeOf<SubstateEvent>()
  })
  // Untouched members keep their types.
  expectTypeOf(device.name).toBeString()
  await device.setExt('owner', 'ops')
  await device.store()

  // @ts-expect-error an unknown property
  await device.get('mem')
  // @ts-expect-error a value of the wrong type
  await device.set('cpu', 'high')
  // @ts-expect-error a value outside the union
  await device.set('health', 'degraded')
  // @ts-expect-error an updater returning the wrong type
  await device.set('cpu', (n = 0) => `${n}`)
  // @ts-expect-error undefined is not a value (delete the property instead)
  await device.set('tags', undefined)
  // @ts-expect-error an unknown property
  device.watch('mem')
  // @ts-expect-error an unknown property
  await device.delete('mem')
})

test('interfaces work; non-JSON property types are rejected', () => {
  const c = createContainer()
  const order = c.subject<OrderProps>('order:1')
  expectTypeOf(order.get('lines')).resolves.toEqualTypeOf<{ sku: string; qty: number }[]>()
  // @ts-expect-error a Date is not a JSON value
  c.subject<{ at: Date }>('x:1')
  // @ts-expect-error a function is not a JSON value
  c.subject<{ run: () => void }>('x:1')
})

test('property types declared once per subject-name pattern at the container', async () => {
  const c = createContainer<
    { 'device.seen': { at: number } },
    { 'device:*': DeviceProps; 'order:*': OrderProps }
  >()
  const device = c.subject('device:42')
  expectTypeOf(device).toEqualTypeOf<TypedSubject<DeviceProps>>()
  expectTypeOf(await device.get('health')).toEqualTypeOf<'ok' | 'critical'>()
  expectTypeOf(c.subject('order:7')).toEqualTypeOf<TypedSubject<OrderProps>>()
  // @ts-expect-error not a device property
  await c.subject('device:42').get('total')
  // A name matching no pattern, or one only known at run time, is untyped.
  expectTypeOf(c.subject('user:1')).toEqualTypeOf<Subject>()
  const name: string = 'device:1'
  expectTypeOf(c.subject(name)).toEqualTypeOf<Subject>()
  expectTypeOf(await c.subject('user:1').get('anything')).toEqualTypeOf<JsonValue>()
  // subject<Props>() still works on such a container.
  expectTypeOf(c.subject<{ n: number }>('user:1')).toEqualTypeOf<TypedSubject<{ n: number }>>()
  // The event map is typed as before.
  c.on('device.seen', (ctx) => expectTypeOf(ctx.payload.at).toBeNumber())
})

test('typed containers and subjects go where untyped ones are expected', async () => {
  const typed = createContainer<{ a: { n: number } }, { 'device:*': DeviceProps }>()
  // A function taking a container of an event map takes one declaring subject types too.
  const takesContainer = <E extends EventMap>(_c: Container<E>) => {}
  takesContainer(typed)
  const takesUntyped = (_c: Container) => {}
  takesUntyped(createContainer<EventMap, { 'device:*': DeviceProps }>())
  // A typed subject is accepted by emit, ctx.emit and request as is.
  await typed.emit('a', typed.subject('device:1'), { n: 1 })
  await typed.emit('a', typed.subject<{ x: number }>('x:1'), { n: 1 })
  typed.on('a', async (ctx) => {
    await ctx.emit('a', { n: 2 }, { subject: typed.subject('device:2') })
  })
  // And a typed handle can be had for the subject a handler got, by name.
  typed.on('a', async (ctx) => {
    const device = typed.subject<DeviceProps>(ctx.subject.name)
    await device.set('cpu', 1)
  })
})
