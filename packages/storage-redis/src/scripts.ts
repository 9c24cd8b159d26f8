/*
 * The Lua scripts of the Redis adapter. Each runs atomically on the server: no WATCH/MULTI, so the
 * caller's client can be shared by any number of writers. They are called by SHA (EVALSHA); when
 * the server does not know a script yet (NOSCRIPT: first call, restart, SCRIPT FLUSH), it is sent
 * once with EVAL, which also caches it.
 */
import { createHash } from 'node:crypto'
import type { Redis } from 'ioredis'

/**
 * Applies a batch of subject commits (one hash per subject, KRules layout), each all or nothing.
 *
 * KEYS: the n subject hashes, then the idempotency keys of the entries that have one.
 * ARGV[1]: idempotency TTL (seconds); ARGV[2]: n; then per entry: field count c, index in KEYS of
 * its idempotency key (0: none), probe flag ('1': read only), then c times: field, op ('s' set,
 * 'd' delete), value, expected ('' unchecked, '-' absent, '=' .. JSON text).
 * Returns per entry: status (1 applied, 0 not applied: check failed or probe, 2 duplicate key),
 * then the c values the fields held before (nil when absent).
 */
const COMMIT = `
local ttl = ARGV[1]
local n = tonumber(ARGV[2])
local a = 3
local out = {}
for k = 1, n do
  local key = KEYS[k]
  local c = tonumber(ARGV[a])
  local idem = tonumber(ARGV[a + 1])
  local status = 1
  if ARGV[a + 2] == '1' then status = 0 end
  if idem > 0 and redis.call('EXISTS', KEYS[idem]) == 1 then status = 2 end
  a = a + 3
  local at = #out + 1
  out[at] = status
  for i = 0, c - 1 do
    local b = a + i * 4
    local v = redis.call('HGET', key, ARGV[b])
    out[at + 1 + i] = v
    local e = ARGV[b + 3]
    if status == 1 and e ~= '' then
      if e == '-' then
        if v then status = 0 end
      elseif v ~= string.sub(e, 2) then
        status = 0
      end
    end
  end
  out[at] = status
  if status == 1 then
    for i = 0, c - 1 do
      local b = a + i * 4
      if ARGV[b + 1] == 's' then
        redis.call('HSET', key, ARGV[b], ARGV[b + 2])
      else
        redis.call('HDEL', key, ARGV[b])
      end
    end
    if idem > 0 then redis.call('SET', KEYS[idem], '1', 'EX', ttl) end
  end
  a = a + c * 4
end
return out
`

/** Deletes a subject and returns the fields it held (flat: field, value, ...). */
const FLUSH = `
local v = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return v
`

/** A Lua script and its SHA1, as EVALSHA wants it. */
export interface Script {
  readonly source: string
  readonly sha: string
}

const script = (source: string): Script => ({
  source,
  sha: createHash('sha1').update(source).digest('hex'),
})

export const commitScript: Script = script(COMMIT)
export const flushScript: Script = script(FLUSH)

/** Runs a script by SHA, sending its source once if the server does not have it. */
export function run(
  client: Redis,
  { source, sha }: Script,
  keys: readonly string[],
  args: readonly (string | number)[],
): Promise<unknown> {
  return client.evalsha(sha, keys.length, ...keys, ...args).catch((e: unknown) => {
    if (!(e instanceof Error && e.message.startsWith('NOSCRIPT'))) throw e
    return client.eval(source, keys.length, ...keys, ...args)
  })
}
