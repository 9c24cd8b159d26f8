/**
 * Substate core: a container of glob-routed handlers, subjects with reactive properties, and
 * pluggable storage.
 *
 * @example
 * import { createContainer, SUBJECT_PROPERTY_CHANGED } from '@substate/core'
 *
 * const container = createContainer()
 * const { on, when } = container.handlers()
 * on(SUBJECT_PROPERTY_CHANGED, when((ctx) => ctx.propertyName === 'cpu'), async (ctx) => {
 *   await ctx.subject.set('health', (ctx.newValue as number) > 90 ? 'critical' : 'healthy')
 * })
 * await container.subject('device:1').set('cpu', 95)
 * @module
 */

export type { Clock, ClockTimer } from './clock.js'
export { systemClock } from './clock.js'
export type { Middleware } from './compose.js'
export { compose } from './compose.js'
export type { Container, NoSubjects } from './container.js'
export { createContainer } from './container.js'
export type { CloseReport, ContainerMetricsApi, ContainerOptions } from './container-options.js'
export type { ScheduleSpec } from './cron.js'
export type {
  ListableDeadLetterSink,
  MemoryDeadLettersOptions,
  RedrivenEvent,
  RedriveResult,
  RedriveTarget,
  StorageDeadLettersOptions,
} from './dead-letters.js'
export {
  createMemoryDeadLetters,
  DEAD_LETTERS,
  deadLetterId,
  decodeDeadLetter,
  encodeDeadLetter,
  redrive,
  redrivenEvent,
  storageDeadLetters,
} from './dead-letters.js'
export type { SubstateErrorCode } from './errors.js'
export {
  CascadeDepthError,
  ConflictError,
  DeliveryError,
  HandlerError,
  isSubstateError,
  PropertyNotFoundError,
  ShutdownError,
  StorageError,
  SubstateError,
  TimeoutError,
  ValidationError,
} from './errors.js'
export type { ContextEmitOptions, Emit, EmitOptions, EventContext } from './event-context.js'
export type { EventLog, EventLogQuery } from './event-log.js'
export { EXTENSION_NAME, RESERVED_EXTENSIONS } from './extensions.js'
export type {
  BatchHandler,
  Filter,
  Handler,
  Handlers,
  MethodDecorator,
  On,
  WhenFilter,
} from './handlers.js'
export type { JsonValue } from './json.js'
export { cloneJson, copyJson, jsonEqual } from './json.js'
export type { LogFn, Logger } from './logger.js'
export type { MemoryStorageOptions } from './memory-storage.js'
export { createMemoryStorage } from './memory-storage.js'
export type {
  ContainerMetrics,
  HandlerMetrics,
  HistogramSnapshot,
  MetricsSnapshot,
} from './metrics.js'
export { DEFAULT_BUCKETS, family, histogramFamily, labels, renderPrometheus } from './metrics.js'
export type { RequestOptions } from './request-reply.js'
export type { GlobMatcher } from './router.js'
export { compileGlob } from './router.js'
export type { Envelope, Interceptor, RouteOptions } from './routes.js'
export type { ScheduleOptions } from './scheduler.js'
export type { PayloadSchemas, SchemaEvents, StandardSchemaV1 } from './schemas.js'
export type {
  Change,
  CommitOptions,
  CommitResult,
  CommittedChange,
  OutboxMessage,
  OutboxStore,
  PropertyKind,
  StorageCapabilities,
  StorageProvider,
  StorageUpdater,
  SubjectSnapshot,
  SubjectStorage,
  UnitCheck,
  UnitCommit,
  UnitCommitResult,
  UnitEntry,
  UnitNamesCheck,
  UnitWrite,
} from './storage.js'
export type { SpanLike, TracerLike } from './telemetry.js'
export { remoteContext, traceContext } from './telemetry.js'
export type { TimerHandle, TimerOptions, TimerSpec } from './timers.js'
export type {
  AnySubject,
  BatchOptions,
  BuiltinEvents,
  DeadLetter,
  DeadLetterQuery,
  DeadLetterSink,
  EmitResult,
  EventMap,
  GetOptions,
  HandlerFailure,
  HandlerOptions,
  NamePattern,
  OutboundEmitter,
  OutboundMeta,
  PayloadOf,
  PropertyChangedPayload,
  PropertyDeletedPayload,
  PropertyEvent,
  PropertyMap,
  RetryPolicy,
  SetOptions,
  StoredDeadLetter,
  Subject,
  SubjectDeletedPayload,
  SubjectMap,
  SubjectOf,
  SubstateEvent,
  TypedSubject,
  Unsubscribe,
  Updater,
  WriteOptions,
} from './types.js'
export {
  SUBJECT_DELETED,
  SUBJECT_PROPERTY_CHANGED,
  SUBJECT_PROPERTY_DELETED,
} from './types.js'
export type { IncomingEvent, ReceiveResult } from './unit-of-work.js'
