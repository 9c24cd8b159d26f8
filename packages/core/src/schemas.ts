/**
 * Validation of received payloads with any Standard Schema v1 library (zod, valibot, arktype...):
 * `createContainer({ schemas: { 'order.created': schema } })`. The interface is the spec's own,
 * copied as the spec invites libraries to do, so that core depends on no package for it.
 */
import { ValidationError } from './errors.js'

/** The Standard Schema v1 interface (https://standardschema.dev), as far as Substate uses it. */
export interface StandardSchemaV1<Input = unknown, Output = Input> {
  readonly '~standard': StandardSchemaV1.Props<Input, Output>
}

export declare namespace StandardSchemaV1 {
  interface Props<Input = unknown, Output = Input> {
    readonly version: 1
    readonly vendor: string
    readonly validate: (value: unknown) => Result<Output> | Promise<Result<Output>>
    readonly types?: Types<Input, Output> | undefined
  }
  type Result<Output> = SuccessResult<Output> | FailureResult
  interface SuccessResult<Output> {
    readonly value: Output
    readonly issues?: undefined
  }
  interface FailureResult {
    readonly issues: ReadonlyArray<Issue>
  }
  interface Issue {
    readonly message: string
    readonly path?: ReadonlyArray<PropertyKey | PathSegment> | undefined
  }
  interface PathSegment {
    readonly key: PropertyKey
  }
  interface Types<Input = unknown, Output = Input> {
    readonly input: Input
    readonly output: Output
  }
  type InferInput<S extends StandardSchemaV1> = NonNullable<S['~standard']['types']>['input']
  type InferOutput<S extends StandardSchemaV1> = NonNullable<S['~standard']['types']>['output']
}

/** Payload schemas by event type (exact types, no globs). */
export type PayloadSchemas = { readonly [type: string]: StandardSchemaV1 }

/** The event map the schemas type: each event's payload is its schema's output. */
export type SchemaEvents<S extends PayloadSchemas> = {
  -readonly [T in keyof S]: StandardSchemaV1.InferOutput<S[T]>
}

/** `payload.items[0].qty` from an issue's path. */
function fieldOf(issue: StandardSchemaV1.Issue): string {
  let out = 'payload'
  for (const seg of issue.path ?? []) {
    const key = typeof seg === 'object' && seg !== null ? seg.key : seg
    out += typeof key === 'number' ? `[${key}]` : `.${String(key)}`
  }
  return out
}

/**
 * Validates `payload` with the schema of `type`, if there is one. Resolves with the payload to
 * use (the schema's output: it may have coerced or defaulted fields), or rejects with a
 * `ValidationError` whose `field` names the first offending field (`payload.items[0].qty`) and
 * whose message lists every issue.
 */
export async function validatePayload(
  schemas: PayloadSchemas,
  type: string,
  payload: unknown,
): Promise<unknown> {
  const schema = Object.hasOwn(schemas, type) ? schemas[type] : undefined
  if (schema === undefined) return payload
  const result = await schema['~standard'].validate(payload)
  if (result.issues === undefined) return result.value
  const issues = result.issues.map((i) => `${fieldOf(i)}: ${i.message}`)
  const first = result.issues[0]
  throw new ValidationError(
    first === undefined ? 'payload' : fieldOf(first),
    `the payload of ${type} does not match its schema (${issues.join('; ')})`,
  )
}

/** Checks `createContainer`'s `schemas` option at once (misuse throws a `TypeError`). */
export function checkSchemas(schemas: unknown): PayloadSchemas | undefined {
  if (schemas === undefined) return undefined
  if (typeof schemas !== 'object' || schemas === null)
    throw new TypeError('createContainer(): schemas must be an object { [eventType]: schema }')
  for (const [type, s] of Object.entries(schemas)) {
    if (typeof (s as StandardSchemaV1)?.['~standard']?.validate !== 'function')
      throw new TypeError(
        `createContainer(): the schema of ${type} is not a Standard Schema (zod, valibot, arktype...)`,
      )
  }
  return schemas as PayloadSchemas
}
