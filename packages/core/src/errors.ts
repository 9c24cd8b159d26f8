/**
 * Typed errors. Every error Substate throws on purpose is a {@link SubstateError} with a string
 * `code`, recognisable across duplicated package copies through a `Symbol.for` brand.
 */

const BRAND = Symbol.for('substate.error')

/** Codes of the errors Substate throws. */
export type SubstateErrorCode =
  | 'STORAGE'
  | 'CONFLICT'
  | 'PROPERTY_NOT_FOUND'
  | 'HANDLER'
  | 'CASCADE_DEPTH'
  | 'SHUTDOWN'
  | 'TIMEOUT'
  | 'VALIDATION'
  | 'DELIVERY'

/** Base class of every Substate error: a `code`, a message saying what to do, an optional `cause`. */
export class SubstateError extends Error {
  readonly code: SubstateErrorCode
  constructor(code: SubstateErrorCode, message: string, options?: ErrorOptions) {
    super(message, options)
    this.code = code
    this.name = new.target.name
    // A registered symbol, not `instanceof`: several copies of this package may be loaded.
    Object.defineProperty(this, BRAND, { value: true })
  }
}

/** A storage operation failed (server down, timeout, bad data). `cause` holds the driver error. */
export class StorageError extends SubstateError {
  readonly storage: string
  readonly subject: string | undefined
  readonly operation: string
  constructor(
    storage: string,
    operation: string,
    subject: string | undefined,
    message: string,
    options?: ErrorOptions,
  ) {
    super(
      'STORAGE',
      `[${storage}] ${operation}${subject === undefined ? '' : ` of ${subject}`} failed: ${message}`,
      options,
    )
    this.storage = storage
    this.operation = operation
    this.subject = subject
  }
}

/** An updater (or a unit of work) kept losing its compare-and-set race past the retry bound. */
export class ConflictError extends SubstateError {
  readonly subject: string
  readonly attempts: number
  constructor(storage: string, subject: string, attempts: number, unit?: string) {
    super(
      'CONFLICT',
      unit === undefined
        ? `[${storage}] commit of ${subject} gave up after ${attempts} compare-and-set attempts: other writers kept changing it (raise the conflict timeout or reduce contention on this subject)`
        : `[${storage}] the unit of work on ${subject} gave up after ${attempts} runs: ${unit} (raise conflictTimeout or reduce contention on these subjects)`,
    )
    this.subject = subject
    this.attempts = attempts
  }
}

/** `subject.get(name)` found no such property and no `default` was given. */
export class PropertyNotFoundError extends SubstateError {
  readonly subject: string
  readonly property: string
  constructor(subject: string, property: string, ext = false) {
    super(
      'PROPERTY_NOT_FOUND',
      `${subject} has no ${ext ? 'ext property' : 'property'} "${property}" (pass { default } to get a fallback)`,
    )
    this.subject = subject
    this.property = property
  }
}

/** A handler failed; `cause` holds what it threw. */
export class HandlerError extends SubstateError {
  readonly handler: string
  readonly eventType: string
  readonly subject: string
  constructor(handler: string, eventType: string, subject: string, options?: ErrorOptions) {
    const reason = options?.cause instanceof Error ? options.cause.message : String(options?.cause)
    super('HANDLER', `handler ${handler} failed on ${eventType} for ${subject}: ${reason}`, options)
    this.handler = handler
    this.eventType = eventType
    this.subject = subject
  }
}

/** A cascade of nested emits went deeper than `maxDepth`: almost always a handler loop. */
export class CascadeDepthError extends SubstateError {
  readonly depth: number
  readonly eventType: string
  constructor(depth: number, eventType: string) {
    super(
      'CASCADE_DEPTH',
      `cascade deeper than maxDepth (${depth}) at ${eventType}: a handler probably re-triggers itself (check its when() filters or raise maxDepth)`,
    )
    this.depth = depth
    this.eventType = eventType
  }
}

/** The container is closing or closed. */
export class ShutdownError extends SubstateError {
  constructor(message = 'the container is closing: no new work is accepted') {
    super('SHUTDOWN', message)
  }
}

/** An operation did not finish in time. */
export class TimeoutError extends SubstateError {
  readonly ms: number
  constructor(what: string, ms: number) {
    super('TIMEOUT', `${what} timed out after ${ms} ms`)
    this.ms = ms
  }
}

/** Input from outside (an event, a request) is invalid; `field` names what is wrong. */
export class ValidationError extends SubstateError {
  readonly field: string
  constructor(field: string, message: string) {
    super('VALIDATION', `invalid ${field}: ${message}`)
    this.field = field
  }
}

/** An outbound transport (HTTP, Pub/Sub) could not deliver an event; `cause` holds why. */
export class DeliveryError extends SubstateError {
  /** The transport, e.g. `cloudevents` or `pubsub`. */
  readonly transport: string
  /** The receiver's HTTP status, when it answered. */
  readonly status: number | undefined
  readonly attempts: number | undefined
  constructor(
    transport: string,
    message: string,
    options?: ErrorOptions & { status?: number; attempts?: number },
  ) {
    super('DELIVERY', `[${transport}] ${message}`, options)
    this.transport = transport
    this.status = options?.status
    this.attempts = options?.attempts
  }
}

/**
 * Whether `e` is a Substate error (from any copy of the package), optionally with a given code.
 * @example if (isSubstateError(err, 'STORAGE')) retryLater()
 */
export function isSubstateError(e: unknown, code?: SubstateErrorCode): e is SubstateError {
  return (
    typeof e === 'object' &&
    e !== null &&
    (e as Record<symbol, unknown>)[BRAND] === true &&
    (code === undefined || (e as SubstateError).code === code)
  )
}
