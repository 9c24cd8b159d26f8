/**
 * Test kit for Substate and its adapters: a fake clock that drives a container's schedules,
 * timers, retries and batch waits without waiting; an event recorder; a fake outbound emitter;
 * `runUnit`, which runs an event as a unit of work and reports what it stored, published and
 * sent; and the storage conformance suite. Only `describeStorage` needs vitest (it is loaded
 * under vitest only): the rest works in any test runner.
 *
 * @example
 * import { createContainer } from '@substate/core'
 * import { fakeClock, runUnit } from '@substate/core/testing'
 *
 * const clock = fakeClock()
 * const container = createContainer({ clock })
 * container.on('job.run', { retry: { attempts: 3 } }, async (ctx) => { ... })
 * const unit = await runUnit(container, { type: 'job.run', subject: 'job:1' }, { clock })
 * @module
 */

export { describeStorage } from './describe-storage.js'
export type { FakeClock, FakeClockOptions } from './fake-clock.js'
export { fakeClock } from './fake-clock.js'
export type { FakeEmitter, FakeEmitterOptions, SentMessage } from './fake-emitter.js'
export { fakeEmitter } from './fake-emitter.js'
export type { EventRecorder, EventSource, WaitForOptions } from './record-events.js'
export { recordEvents } from './record-events.js'
export type { RunUnitOptions, TestEvent, UnitReport, UnitRunner } from './run-unit.js'
export { runUnit } from './run-unit.js'
export type { OwnConnection, StorageFactory } from './storage-factory.js'
