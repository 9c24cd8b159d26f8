import { inspect } from 'node:util'

/** One level of a pino-style logger: the fields first, then an optional message. */
export type LogFn = (obj: Record<string, unknown>, msg?: string) => void

/**
 * What `createContainer({ logger })` takes: any pino-style logger (pino, a pino child, bunyan's
 * object-first calls, or four functions). Fields come first, the message second.
 */
export interface Logger {
  readonly error: LogFn
  readonly warn: LogFn
  readonly info: LogFn
  readonly debug: LogFn
}

const line = (obj: Record<string, unknown>, msg: string | undefined): string => {
  const fields: string[] = []
  for (const [k, v] of Object.entries(obj)) {
    if (k === 'err' || v === undefined) continue
    fields.push(
      `${k}=${typeof v === 'string' ? JSON.stringify(v) : inspect(v, { depth: 2, breakLength: Infinity })}`,
    )
  }
  return `[substate] ${msg ?? ''}${fields.length > 0 ? ` ${fields.join(' ')}` : ''}`
}

/**
 * The logger of a container given none: errors and warnings to the console, each with its fields
 * (event id, type, subject, origin id) and the error's stack and causes; info and debug dropped.
 */
export const consoleLogger: Logger = {
  error: (obj, msg) =>
    obj.err === undefined ? console.error(line(obj, msg)) : console.error(line(obj, msg), obj.err),
  warn: (obj, msg) =>
    obj.err === undefined ? console.warn(line(obj, msg)) : console.warn(line(obj, msg), obj.err),
  info: () => {},
  debug: () => {},
}

/** Checks a logger option: four functions. */
export function checkLogger(logger: unknown, where: string): Logger {
  const l = logger as Partial<Logger> | null
  for (const level of ['error', 'warn', 'info', 'debug'] as const) {
    if (typeof l?.[level] !== 'function')
      throw new TypeError(
        `${where}: logger must be pino-style, with error, warn, info and debug functions (${level} is missing)`,
      )
  }
  // Bound: pino's methods read `this`.
  return {
    error: l!.error!.bind(l),
    warn: l!.warn!.bind(l),
    info: l!.info!.bind(l),
    debug: l!.debug!.bind(l),
  }
}

/** The fields that identify an event in a log line. */
export function eventFields(event: {
  readonly id: string
  readonly type: string
  readonly subject: string
  readonly source?: string
  readonly originId?: string
}): Record<string, unknown> {
  return {
    eventId: event.id,
    eventType: event.type,
    subject: event.subject,
    source: event.source,
    originId: event.originId,
  }
}
