/**
 * P1: `subject.set` throughput. 1,000 subjects, one matching async handler among 100 registered
 * glob patterns, in-memory storage. Baseline: the least a hand-written version would do — a Map of
 * Maps, an `===` compare, an event object, one precompiled glob test and an awaited handler.
 */
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  InMemorySpanExporter,
} from '@opentelemetry/sdk-trace-base'
import {
  createContainer,
  SUBJECT_PROPERTY_CHANGED,
  type Subject,
  type TracerLike,
} from '@substate/core'
import micromatch from 'micromatch'
import { type Benchmark, compare, type Figure, fmt } from './harness.js'

const SUBJECTS = 1000
const BATCH = 1000

async function substate(tracer?: TracerLike): Promise<() => Promise<number>> {
  const container = createContainer(tracer === undefined ? {} : { tracer })
  const { on } = container.handlers()
  for (let i = 0; i < 99; i++) on(`device.${i}.*`, async () => {})
  let sink = 0
  on(SUBJECT_PROPERTY_CHANGED, async (ctx) => {
    sink += ctx.newValue as number
  })
  const subjects: Subject[] = Array.from({ length: SUBJECTS }, (_, i) =>
    container.subject(`device:${i}`),
  )
  for (const s of subjects) await s.set('v', -1) // load once, as a running service would have
  let n = 0
  return async () => {
    for (let i = 0; i < BATCH; i++) await subjects[i % SUBJECTS]!.set('v', n++)
    return BATCH + sink * 0
  }
}

function naive(): () => Promise<number> {
  const store = new Map<string, Map<string, unknown>>()
  const matches = micromatch.matcher(SUBJECT_PROPERTY_CHANGED)
  let sink = 0
  const handler = async (e: { newValue: unknown }): Promise<void> => {
    sink += e.newValue as number
  }
  const set = async (subject: string, prop: string, value: unknown): Promise<void> => {
    let props = store.get(subject)
    if (props === undefined) {
      props = new Map()
      store.set(subject, props)
    }
    const old = props.get(prop)
    if (old === value) return
    props.set(prop, value)
    const event = {
      type: SUBJECT_PROPERTY_CHANGED,
      subject,
      propertyName: prop,
      oldValue: old,
      newValue: value,
    }
    if (matches(event.type)) await handler(event)
  }
  const names = Array.from({ length: SUBJECTS }, (_, i) => `device:${i}`)
  let n = 0
  return async () => {
    for (let i = 0; i < BATCH; i++) await set(names[i % SUBJECTS]!, 'v', n++)
    return BATCH + sink * 0
  }
}

export const benchmarks: Benchmark[] = [
  {
    id: 'P1',
    title: 'subject.set, 1,000 subjects, 1 matching async handler among 100 patterns, memory',
    async run() {
      const r = await compare(await substate(), naive())
      return [
        {
          id: 'P1',
          goal: 0.35,
          ratio: r.ratio,
          details: [
            `substate ${fmt(r.candidate)} sets/s`,
            `naive baseline ${fmt(r.baseline)} sets/s`,
          ],
        },
        await traced(),
      ]
    },
  },
]

/**
 * P1 with the OpenTelemetry SDK on (a span per dispatch and per handler, into the in-memory
 * exporter behind the batch span processor, cleared every batch) against P1 with tracing off, alternating rounds: the ratio is
 * what tracing costs on the hot path (informational, no goal).
 */
async function traced(): Promise<Figure> {
  const exporter = new InMemorySpanExporter()
  const provider = new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(exporter)] })
  const on = await substate(provider.getTracer('p1'))
  const withSpans = async (): Promise<number> => {
    const n = await on()
    exporter.reset()
    return n
  }
  const r = await compare(withSpans, await substate())
  await provider.shutdown()
  return {
    id: 'P1-otel',
    goal: 0,
    ratio: r.ratio,
    details: [
      `tracing on (OpenTelemetry SDK, in-memory exporter) ${fmt(r.candidate)} sets/s`,
      `tracing off ${fmt(r.baseline)} sets/s`,
    ],
  }
}
