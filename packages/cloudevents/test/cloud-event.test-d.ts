import { type CloudEvent, toCloudEvent, toHttpMessage } from '@substate/cloudevents'
import type { SubstateEvent } from '@substate/core'
import { type CloudEventV1, CloudEvent as SdkCloudEvent } from 'cloudevents'
import { expectTypeOf, test } from 'vitest'

test('CloudEvent is declared locally and matches the SDK CloudEventV1 both ways', () => {
  expectTypeOf<CloudEvent>().toExtend<CloudEventV1<unknown>>()
  expectTypeOf<CloudEventV1<unknown>>().toExtend<CloudEvent>()
  // an SDK instance goes where a CloudEvent is taken
  const sdk = new SdkCloudEvent({ type: 't', source: 's', data: { a: 1 } })
  expectTypeOf(toHttpMessage(sdk, 'binary').body).toEqualTypeOf<string | Uint8Array>()
})

test('toCloudEvent returns a CloudEvent with typed attributes', () => {
  const ce = toCloudEvent({} as SubstateEvent)
  expectTypeOf(ce).toEqualTypeOf<CloudEvent>()
  expectTypeOf(ce.id).toBeString()
  expectTypeOf(ce.subject).toEqualTypeOf<string | undefined>()
  expectTypeOf(ce.originid).toBeUnknown()
})

test('a CloudEvent needs its required attributes', () => {
  // @ts-expect-error id and specversion are required
  const missing: CloudEvent = { type: 't', source: 's' }
  // @ts-expect-error type is a string
  const wrong: CloudEvent = { id: '1', specversion: '1.0', type: 1, source: 's' }
  expectTypeOf(missing).toEqualTypeOf(wrong)
})
