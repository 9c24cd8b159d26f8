export { listen } from '@substate/test-support/http'

/** The `ce-` headers of a valid binary-mode event. */
export const binary = (
  over: Record<string, string> = {},
  id = 'e-1',
  subject = 'device:1',
): Record<string, string> => ({
  'content-type': 'application/json',
  'ce-specversion': '1.0',
  'ce-id': id,
  'ce-source': 'tests',
  'ce-type': 'device.reading',
  'ce-subject': subject,
  ...over,
})

/** A valid structured-mode event. */
export const structured = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  specversion: '1.0',
  id: 'e-1',
  source: 'tests',
  type: 'device.reading',
  subject: 'device:1',
  ...over,
})
