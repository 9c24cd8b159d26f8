import {
  type Clock,
  createContainer,
  type JsonValue,
  type OutboundEmitter,
  type ReceiveResult,
  type SubstateEvent,
} from '@substate/core'
import {
  type EventRecorder,
  type FakeClock,
  fakeClock,
  fakeEmitter,
  recordEvents,
  runUnit,
  type SentMessage,
  type UnitReport,
} from '@substate/core/testing'
import { expectTypeOf, test } from 'vitest'

type Events = { 'order.paid': { total: number } }

test('a fake clock is a Clock a container takes; runUntil keeps the promise type', async () => {
  const clock = fakeClock({ now: new Date() })
  expectTypeOf(clock).toExtend<Clock>()
  createContainer({ clock })
  expectTypeOf(clock.runUntil(Promise.resolve(42))).resolves.toBeNumber()
  expectTypeOf(clock.advance).returns.resolves.toBeVoid()
  expectTypeOf(clock.next).returns.resolves.toBeBoolean()
  // @ts-expect-error a clock needs a start time as a number or a Date
  fakeClock({ now: '2026-01-01' })
})

test('runUnit and recordEvents take typed containers; the report is typed', async () => {
  const container = createContainer<Events, { 'order:*': { status: string } }>({
    clock: fakeClock(),
  })
  const recorder = recordEvents(container, 'order.*')
  expectTypeOf(recorder).toEqualTypeOf<EventRecorder>()
  expectTypeOf(recorder.waitFor('order.paid')).resolves.toEqualTypeOf<SubstateEvent>()
  const unit = await runUnit(container, { type: 'order.paid', subject: 'order:1' })
  expectTypeOf(unit).toEqualTypeOf<UnitReport>()
  expectTypeOf(unit.status).toEqualTypeOf<ReceiveResult['status']>()
  expectTypeOf(unit.stored).toEqualTypeOf<
    Readonly<Record<string, Readonly<Record<string, JsonValue>>>>
  >()
  expectTypeOf(unit.sent).toEqualTypeOf<readonly SentMessage[]>()
  // @ts-expect-error an event needs a subject
  await runUnit(container, { type: 'order.paid' })
  // @ts-expect-error the clock option is a fake clock (it skips time)
  await runUnit(container, { type: 'x', subject: 'y' }, { clock: {} as Clock })
  expectTypeOf<FakeClock>().toExtend<Clock>()
})

test('a fake emitter goes wherever an outbound emitter does', () => {
  const emitter = fakeEmitter({ fail: (m) => m.event.type === 'x' })
  expectTypeOf(emitter).toExtend<OutboundEmitter>()
  createContainer().route('invoice.*', emitter)
  createContainer({ targets: emitter.targets })
  // @ts-expect-error fail is a count or a predicate
  fakeEmitter({ fail: 'twice' })
})
