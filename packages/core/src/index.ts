/**
 * @module
 */

export type { SubstateErrorCode } from './errors.js'
export {
  CascadeDepthError,
  ConflictError,
  HandlerError,
  isSubstateError,
  PropertyNotFoundError,
  ShutdownError,
  StorageError,
  SubstateError,
  TimeoutError,
  ValidationError,
} from './errors.js'
export type { JsonValue } from './json.js'
export { cloneJson, copyJson, jsonEqual } from './json.js'
export type { MemoryStorageOptions } from './memory-storage.js'
export { createMemoryStorage } from './memory-storage.js'
export type { GlobMatcher } from './router.js'
export { compileGlob } from './router.js'
export type {
  Change,
  CommitOptions,
  CommitResult,
  CommittedChange,
  PropertyKind,
  StorageCapabilities,
  StorageProvider,
  SubjectSnapshot,
  SubjectStorage,
  Updater,
} from './storage.js'
