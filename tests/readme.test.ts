/**
 * Every TypeScript snippet of the READMEs and of the guides in `docs/` runs as pasted. A `console.log(x) // expected` line in a
 * snippet is also an assertion: the snippet must print exactly that line. A snippet preceded by
 * `<!-- readme-test: skip (reason) -->` is not run; `<!-- readme-test: needs redis -->` (or
 * `postgres`, `pubsub`) runs only where that service is available.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { format } from 'node:util'
import { type ServiceName, services } from '@substate/test-support/services'
import { afterEach, describe, it, vi } from 'vitest'

const root = fileURLToPath(new URL('..', import.meta.url))
const outDir = join(root, 'tests', '.readme')
mkdirSync(outDir, { recursive: true })

interface Snippet {
  readonly file: string
  readonly line: number
  readonly code: string
  readonly directive: string | undefined
}

function snippets(file: string): Snippet[] {
  const lines = readFileSync(file, 'utf8').split('\n')
  const out: Snippet[] = []
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]!.trim() !== '```ts') continue
    const start = i
    const body: string[] = []
    for (i++; i < lines.length && lines[i]!.trim() !== '```'; i++) body.push(lines[i]!)
    let j = start - 1
    while (j >= 0 && lines[j]!.trim() === '') j--
    const directive = /<!-- readme-test: (.+?) -->/.exec(lines[j] ?? '')?.[1]
    out.push({ file, line: start + 1, code: body.join('\n'), directive })
  }
  return out
}

const readmes = [
  join(root, 'README.md'),
  ...readdirSync(join(root, 'packages')).map((p) => join(root, 'packages', p, 'README.md')),
  ...(existsSync(join(root, 'docs')) ? readdirSync(join(root, 'docs')) : [])
    .filter((f) => f.endsWith('.md'))
    .sort()
    .map((f) => join(root, 'docs', f)),
].filter((f) => {
  try {
    readFileSync(f)
    return true
  } catch {
    return false
  }
})

afterEach(() => {
  vi.restoreAllMocks()
})

for (const file of readmes) {
  const list = snippets(file)
  if (list.length === 0) continue
  describe(relative(root, file), () => {
    for (const s of list) {
      const needs = /^needs (\w+)/.exec(s.directive ?? '')?.[1] as ServiceName | undefined
      const skip =
        s.directive?.startsWith('skip') ||
        (needs !== undefined && services[needs] === null && process.env.CI !== 'true')
      it.skipIf(skip)(`snippet at line ${s.line} runs as pasted`, async () => {
        const printed: string[] = []
        vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
          printed.push(format(...args))
        })
        const name = `${relative(root, file).replaceAll(/[^a-z0-9]+/gi, '-')}-${s.line}.ts`
        const path = join(outDir, name)
        writeFileSync(path, `${s.code}\nexport {}\n`)
        await import(/* @vite-ignore */ `${path}?t=${Date.now()}`)
        for (const m of s.code.matchAll(/console\.log\(.*\) \/\/ (.+)$/gm)) {
          const expected = m[1]!.trim()
          if (!printed.includes(expected)) {
            throw new Error(
              `${relative(root, file)}:${s.line} should print\n  ${expected}\nbut printed\n  ${printed.join('\n  ')}`,
            )
          }
        }
      })
    }
  })
}
