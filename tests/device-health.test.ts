/**
 * The main job as a user meets it: `node examples/device-health/dist/main.js` (what `pnpm start`
 * runs after `tsc -b`) on a real socket, driven by the README's own curl commands.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const root = fileURLToPath(new URL('..', import.meta.url))
const run = promisify(execFile)

/** The README's curl block: commands (continuations joined) with the `# ` lines that follow them. */
function readmeCurls(): Array<{ command: string; expected: string; prints: string[] }> {
  const readme = readFileSync(`${root}/README.md`, 'utf8')
  const block = /<!-- readme-test: curl against the main job -->\n```sh\n([\s\S]*?)```/.exec(readme)
  if (!block)
    throw new Error('README.md lost its curl block (marked readme-test: curl against the main job)')
  const out: Array<{ command: string; expected: string; prints: string[] }> = []
  const lines = block[1]!.split('\n')
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i]!.startsWith('curl')) continue
    let command = lines[i]!
    while (command.endsWith('\\')) command = `${command.slice(0, -1)} ${lines[++i]!.trim()}`
    const expected = lines[++i]!.replace(/^# /, '')
    const prints: string[] = []
    for (i++; i < lines.length && /^#\s{3,}/.test(lines[i]!); i++) {
      prints.push(lines[i]!.replace(/^#\s+(the service prints:\s+)?/, '').trim())
    }
    out.push({ command, expected, prints })
  }
  return out
}

describe('examples/device-health, the main job', () => {
  let child: ChildProcess
  let url = ''
  let output = ''

  beforeAll(async () => {
    child = spawn(process.execPath, ['examples/device-health/dist/main.js'], {
      cwd: root,
      env: { ...process.env, PORT: '0', SIMULATE: '1', REDIS_URL: '', DATABASE_URL: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    child.stdout!.on('data', (d: Buffer) => {
      output += d.toString()
    })
    child.stderr!.on('data', (d: Buffer) => {
      output += d.toString()
    })
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`the service did not start:\n${output}`)),
        20_000,
      )
      const check = (): void => {
        if (!output.includes('ready:')) return
        url = /serving on (http:\/\/[^\s]+)/.exec(output)![1]!
        clearTimeout(timer)
        resolve()
      }
      child.stdout!.on('data', check)
      child.once('exit', (code) => reject(new Error(`the service exited (${code}):\n${output}`)))
    })
  }, 30_000)

  afterAll(async () => {
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r))
      child.kill('SIGTERM')
      await exited
    }
  })

  it('reacts to the simulated metric stream as the README says', () => {
    expect(output).toContain('device:prod-01: health warning → critical')
    expect(output).toContain('device:prod-01: ALERT device.alert.critical {"cpu":95}')
    expect(output).toContain('device:prod-01: ALERT device.alert.recovered')
    expect(output).toContain('"alerts":2')
  })

  it("answers the README's curl commands with what the README shows", async () => {
    const curls = readmeCurls()
    expect(curls.length).toBeGreaterThanOrEqual(2)
    for (const { command, expected, prints } of curls) {
      const { stdout } = await run('bash', ['-c', command.replaceAll('http://127.0.0.1:8080', url)])
      expect(stdout.trim(), command).toBe(expected)
      for (const line of prints) expect(output).toContain(line)
    }
  })

  it('drains on SIGTERM and exits 0', async () => {
    const exited = new Promise<number | null>((r) => child.once('exit', r))
    child.kill('SIGTERM')
    expect(await exited).toBe(0)
    expect(output).toContain('draining...')
  })
})
