/**
 * The layer rule of packages/core/src, read from the import lines of every source file (type-only
 * imports included). Layers, lowest first:
 *
 *   0 leaves         import only other leaves
 *   1 subject side   the subject, its pending-write ledger, the identity map
 *   2 dispatch side  event contexts, handlers, failures, routes, the dispatcher, event building
 *   3 features       units of work, batches, request/reply, scheduler, timers, lifecycle; a
 *                    feature never imports another feature (it gets what it needs from the
 *                    container through a small host interface)
 *   4 root           container.ts (the composition root) and index.ts (the public entry)
 *
 * A file may import its own layer or a lower one (features: lower only), and no import cycle may
 * exist. A new file must be given a layer here.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../src')

const LAYERS: Record<string, readonly string[]> = {
  leaves: [
    '_internal.ts',
    'clock.ts',
    'compose.ts',
    'cron.ts',
    'dead-letters.ts',
    'errors.ts',
    'event-log.ts',
    'extensions.ts',
    'json.ts',
    'keyed-queue.ts',
    'logger.ts',
    'memory-storage.ts',
    'metrics.ts',
    'router.ts',
    'schemas.ts',
    'scope.ts',
    'serial-queue.ts',
    'storage.ts',
    'telemetry.ts',
    'types.ts',
    'unit-state.ts',
    'unit-committer.ts',
    'storage-kit/*',
    'testing/describe-storage.ts',
    'testing/describe-storage-basics.ts',
    'testing/describe-storage-concurrency.ts',
    'testing/describe-storage-connections.ts',
    'testing/describe-storage-kit.ts',
    'testing/describe-storage-units.ts',
    'testing/fake-clock.ts',
    'testing/fake-emitter.ts',
    'testing/record-events.ts',
    'testing/storage-factory.ts',
  ],
  subject: [
    'pending-writes.ts',
    'subject-host.ts',
    'subject-cache.ts',
    'subject-views.ts',
    'subject.ts',
    'identity-map.ts',
  ],
  dispatch: [
    'event-context.ts',
    'failures.ts',
    'handlers.ts',
    'routes.ts',
    'dispatcher.ts',
    'events.ts',
  ],
  features: [
    'unit-of-work.ts',
    'batch.ts',
    'request-reply.ts',
    'scheduler.ts',
    'timers.ts',
    'lifecycle.ts',
    'outbox.ts',
  ],
  // The test kit's entry and `runUnit` (which speaks of `receive`) sit on top, as `index.ts`.
  root: [
    'container-options.ts',
    'close.ts',
    'container.ts',
    'index.ts',
    'testing/run-unit.ts',
    'testing/index.ts',
  ],
}
const ORDER = ['leaves', 'subject', 'dispatch', 'features', 'root'] as const
type Layer = (typeof ORDER)[number]

/** The layer of a file (a path relative to src, with `/`), or undefined when it has none. */
function layerOf(file: string): Layer | undefined {
  for (const layer of ORDER) {
    for (const entry of LAYERS[layer]!) {
      if (entry === file) return layer
      if (entry.endsWith('/*') && file.startsWith(entry.slice(0, -1))) return layer
    }
  }
  return undefined
}

/** Relative imports of a source text: static, type-only, re-exports and dynamic `import()`. */
function importsOf(text: string): string[] {
  const out: string[] = []
  const patterns = [
    /^\s*(?:import|export)\s[^;]*?\sfrom\s+['"](\.[^'"]+)['"]/gms,
    /^\s*import\s+['"](\.[^'"]+)['"]/gm,
    /\bimport\(\s*['"](\.[^'"]+)['"]\s*\)/g,
  ]
  for (const re of patterns) for (const m of text.matchAll(re)) out.push(m[1]!)
  return out
}

type Graph = Map<string, string[]>

function sourceGraph(): Graph {
  const graph: Graph = new Map()
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name)
      if (entry.isDirectory()) walk(path)
      else if (entry.name.endsWith('.ts')) {
        const file = relative(SRC, path).split('\\').join('/')
        const deps = importsOf(readFileSync(path, 'utf8')).map((spec) => {
          const target = relative(SRC, resolve(dirname(path), spec))
            .split('\\')
            .join('/')
          return target.replace(/\.js$/, '.ts')
        })
        graph.set(file, deps)
      }
    }
  }
  walk(SRC)
  return graph
}

/** Every breach of the layer rule in `graph`, one line each. */
function breaches(graph: Graph, layer: (file: string) => Layer | undefined): string[] {
  const out: string[] = []
  for (const [file, deps] of graph) {
    const from = layer(file)
    if (from === undefined) {
      out.push(`${file} has no layer (add it to LAYERS in layers.test.ts)`)
      continue
    }
    for (const dep of deps) {
      const to = layer(dep)
      if (to === undefined) continue // reported as a file of its own
      const a = ORDER.indexOf(from)
      const b = ORDER.indexOf(to)
      if (b > a) out.push(`${file} (${from}) imports ${dep} (${to}): up a layer`)
      else if (from === 'features' && to === 'features')
        out.push(`${file} imports ${dep}: features do not import each other`)
    }
  }
  return out
}

/** The import cycles of `graph` (each as `a -> b -> a`). */
function cycles(graph: Graph): string[] {
  const out: string[] = []
  const state = new Map<string, 'open' | 'done'>()
  const stack: string[] = []
  const visit = (file: string): void => {
    const s = state.get(file)
    if (s === 'done') return
    if (s === 'open') {
      out.push([...stack.slice(stack.indexOf(file)), file].join(' -> '))
      return
    }
    state.set(file, 'open')
    stack.push(file)
    for (const dep of graph.get(file) ?? []) visit(dep)
    stack.pop()
    state.set(file, 'done')
  }
  for (const file of graph.keys()) visit(file)
  return out
}

describe('core layers', () => {
  const graph = sourceGraph()

  it('reads the import lines of every source file', () => {
    expect(graph.get('container.ts')).toContain('dispatcher.ts')
    expect(graph.get('subject.ts')).toContain('pending-writes.ts')
    expect(graph.size).toBeGreaterThan(30)
  })

  it('has no import that goes up a layer, and no feature importing another', () => {
    expect(breaches(graph, layerOf)).toEqual([])
  })

  it('has no import cycle', () => {
    expect(cycles(graph)).toEqual([])
  })

  it('catches what it is meant to catch', () => {
    const bad: Graph = new Map([
      ['json.ts', ['subject.ts']],
      ['subject.ts', ['json.ts']],
      ['batch.ts', ['timers.ts']],
      ['timers.ts', []],
      ['stray.ts', []],
    ])
    expect(breaches(bad, layerOf)).toEqual([
      'json.ts (leaves) imports subject.ts (subject): up a layer',
      'batch.ts imports timers.ts: features do not import each other',
      'stray.ts has no layer (add it to LAYERS in layers.test.ts)',
    ])
    expect(cycles(bad)).toEqual(['json.ts -> subject.ts -> json.ts'])
    expect(
      importsOf(
        "import type { A } from './a.js'\nexport { b } from './b.js'\nimport {\n  c,\n} from './c.js'\nawait import('./d.js')",
      ).sort(),
    ).toEqual(['./a.js', './b.js', './c.js', './d.js'])
  })
})
