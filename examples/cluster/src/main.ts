/**
 * `node dist/main.js`: the whole cluster on one machine. Creates the topic and the shared
 * subscription if missing, then starts the HTTP front and `WORKERS` worker processes, and stops
 * them all on Ctrl-C (each drains first).
 *
 *   PUBSUB_EMULATOR_HOST=127.0.0.1:8085 node examples/cluster/dist/main.js
 *   curl -X POST localhost:8080/events/page.viewed/page:home -d '{"user":"ada"}'
 *   curl localhost:8080/subjects/page:home
 */
import { type ChildProcess, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { config, ensureTopology, pubsubClient } from './config.js'

const client = pubsubClient()
await ensureTopology(client)
await client.close()

const start = (file: string): Promise<ChildProcess> =>
  new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(new URL(file, import.meta.url)), [], { stdio: 'inherit' })
    child.on('message', (m: { ready?: boolean }) => {
      if (m.ready) resolve(child)
    })
    child.once('exit', (code) => reject(new Error(`${file} exited (${code})`)))
  })

const children = await Promise.all([
  start('./front.js'),
  ...Array.from({ length: config.workers }, () => start('./worker.js')),
])
console.log(
  `[cluster] front and ${config.workers} workers up; try:\n` +
    `  curl -X POST 127.0.0.1:${config.port}/events/page.viewed/page:home -d '{"user":"ada"}'\n` +
    `  curl 127.0.0.1:${config.port}/subjects/page:home`,
)

const stop = (): void => {
  for (const child of children) child.kill('SIGTERM')
}
process.once('SIGINT', stop)
process.once('SIGTERM', stop)
