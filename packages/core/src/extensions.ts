/** CloudEvents spec §3.1.1: attribute names MUST consist of lower-case ASCII letters and digits. */
export const EXTENSION_NAME: RegExp = /^[a-z0-9]+$/

/**
 * Names an extension must not take: the context attributes of CloudEvents 1.0 (with `data`,
 * `data_base64`) and the two extensions Substate sets itself (`originid`, `propertyname`).
 */
export const RESERVED_EXTENSIONS: ReadonlySet<string> = new Set([
  'id',
  'source',
  'specversion',
  'type',
  'datacontenttype',
  'dataschema',
  'subject',
  'time',
  'data',
  'data_base64',
  'originid',
  'propertyname',
])
