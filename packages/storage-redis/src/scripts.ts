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
 * Per subject it reads the old values with one HMGET and writes with one HSET and one HDEL:
 * `redis.call` dominates the cost of a script, so per-field calls are avoided. Fields written
 * blind (`w`, `x`) are not read: when all of an entry's fields are, it makes no HMGET at all.
 *
 * KEYS: the n subject hashes, then the idempotency keys of the entries that have one.
 * ARGV[1]: idempotency TTL (seconds); ARGV[2]: n; then per entry:
 *   c (field count), index in KEYS of its idempotency key (0: none), flags (one letter per field),
 *   the c field names, the values of the set fields, the expected values of the checked fields.
 * Flags: `s` set, `S` set if it holds the expected value, `A` set if absent; `d` delete, `D`
 * delete if it holds the expected value, `E` delete if absent; `r` read only (a probe); `w` set
 * and `x` delete without reading the old value.
 * Returns per entry: status (1 applied, 0 not applied: check failed or probe, 2 duplicate key),
 * then the c values the fields held before (nil when absent, and for fields written blind).
 */
/**
 * Lua helpers of the commit script: `unpack` takes at most a few thousand values, so long lists go
 * to Redis in chunks. `hmget_list` reads the fields of `list` (nil as false).
 */
const HELPERS = `
local CHUNK = 1000
local function hmget_list(key, list)
  local all = {}
  for s = 1, #list, CHUNK do
    local part = redis.call('HMGET', key, unpack(list, s, math.min(s + CHUNK - 1, #list)))
    for i = 1, #part do all[s + i - 1] = part[i] end
  end
  return all
end
`

const COMMIT = `${HELPERS}
local function call_chunked(cmd, key, list, from, to)
  for s = from, to, CHUNK do
    redis.call(cmd, key, unpack(list, s, math.min(s + CHUNK - 1, to)))
  end
end
local function hmget(key, from, count)
  local all = {}
  for s = 0, count - 1, CHUNK do
    local part = redis.call('HMGET', key, unpack(ARGV, from + s, from + math.min(s + CHUNK, count) - 1))
    for i = 1, #part do all[s + i] = part[i] end
  end
  return all
end
local out = {}
local o = 0
local a = 3
for k = 1, tonumber(ARGV[2]) do
  local key = KEYS[k]
  local c = tonumber(ARGV[a])
  local idem = tonumber(ARGV[a + 1])
  local flags = ARGV[a + 2]
  local names = a + 3
  local values = names + c
  local v, e = values, values
  local blind = 0
  for i = 1, c do
    local f = string.byte(flags, i)
    if f == 115 or f == 83 or f == 65 or f == 119 then e = e + 1 end
    if f == 119 or f == 120 then blind = blind + 1 end
  end
  local cur = {}
  if blind == 0 then
    if c > 0 then cur = hmget(key, names, c) end
  else
    local read, at = {}, {}
    for i = 1, c do
      local f = string.byte(flags, i)
      if f == 119 or f == 120 then
        cur[i] = false
      else
        read[#read + 1] = ARGV[names + i - 1]
        at[#at + 1] = i
      end
    end
    if #read > 0 then
      local part = hmget_list(key, read)
      for j = 1, #at do cur[at[j]] = part[j] end
    end
  end
  local ok = true
  local sets, dels = {}, {}
  for i = 1, c do
    local f = string.byte(flags, i)
    local old = cur[i]
    if f == 114 then
      ok = false
    elseif f == 83 or f == 68 then
      if old ~= ARGV[e] then ok = false end
      e = e + 1
    elseif (f == 65 or f == 69) and old then
      ok = false
    end
    if f == 115 or f == 83 or f == 65 or f == 119 then
      sets[#sets + 1] = ARGV[names + i - 1]
      sets[#sets + 1] = ARGV[v]
      v = v + 1
    elseif f ~= 114 then
      dels[#dels + 1] = ARGV[names + i - 1]
    end
  end
  local status = ok and 1 or 0
  if idem > 0 and redis.call('EXISTS', KEYS[idem]) == 1 then status = 2 end
  o = o + 1
  out[o] = status
  for i = 1, c do out[o + i] = cur[i] end
  o = o + c
  if status == 1 then
    if #sets > 0 then call_chunked('HSET', key, sets, 1, #sets) end
    if #dels > 0 then call_chunked('HDEL', key, dels, 1, #dels) end
    if idem > 0 then redis.call('SET', KEYS[idem], '1', 'EX', ARGV[1]) end
  end
  a = e
end
return out
`

/**
 * Writes change sets that are only blind sets, one `HSET` per subject: what `store()` of many
 * subjects sends. A script rather than pipelined `HSET`s: one command for the whole batch costs
 * the client far less, and the server about as much.
 *
 * KEYS: the subject hashes. ARGV per key: c (field count), then c field/value pairs.
 * Returns per key 1, or the error that key's `HSET` raised (a key that is not a hash): the other
 * keys are still written, so each entry's outcome is exact.
 */
const SETS = `
local out = {}
local a = 1
for k = 1, #KEYS do
  local c = tonumber(ARGV[a])
  out[k] = 1
  for s = a + 1, a + 2 * c, 1000 do
    local r = redis.pcall('HSET', KEYS[k], unpack(ARGV, s, math.min(s + 999, a + 2 * c)))
    if type(r) == 'table' and r.err then
      out[k] = r.err
      break
    end
  end
  a = a + 1 + 2 * c
end
return out
`

/** Deletes a subject and returns the fields it held (flat: field, value, ...). */
const FLUSH = `
local v = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return v
`

/**
 * Applies a batch of units of work, in order, each all or nothing across its subjects: a unit's
 * reads are checked (stored text byte for byte, property names) and, only when all hold and its
 * key was not applied, all its writes are made, its key recorded and its outbox messages stored,
 * leased to their owner (server clock).
 *
 * Few `redis.call`s (they dominate a script's cost): the key is recorded by one `SET NX` (a
 * duplicate when it exists), deleted again when the unit is not applied; checked fields are read
 * by one `HMGET` from ARGV, which also refuses a key of another type (a subject only written is
 * asked its `TYPE`); writes are one `HSET`/`HDEL` from ARGV; `TIME` only with outbox messages.
 *
 * KEYS[1..3]: the outbox's lease sorted set, bodies hash and owners hash; then the subject hashes
 * and unit keys the ARGV refer to by index.
 * ARGV[1]: unit key TTL (seconds); ARGV[2]: number of units; then per unit:
 *   key index (0: none), entry count, outbox count o, and when o > 0 lease (ms) and owner; per
 *   entry:
 *     hash index, check count c, check flags (`v` expects a value, `a` absent), names-check count
 *     n, set count s, delete count d; the c check fields, the expected values of the `v` checks;
 *     per names check: kind letter, count, the fields; the s set fields and values (field, value,
 *     ...), the d deleted fields;
 *   per outbox message: id, body.
 * Returns per unit: 1 applied, 2 duplicate, {3, key} refused (a key that is not a hash, nothing
 * written), or {0, i, fields, ...}: for each entry i (0-based) whose check failed, its hash as
 * HGETALL returns it.
 */
const UNITS = `
local CHUNK = 1000
local function call_range(cmd, key, from, to)
  for s = from, to, CHUNK do
    redis.call(cmd, key, unpack(ARGV, s, math.min(s + CHUNK - 1, to)))
  end
end
-- HMGET of ARGV[from .. from + count - 1]; nil when the key is not a hash
local function hmget_range(key, from, count)
  if count <= CHUNK then
    local r = redis.pcall('HMGET', key, unpack(ARGV, from, from + count - 1))
    if r.err then return nil end
    return r
  end
  local all = {}
  for s = 0, count - 1, CHUNK do
    local r = redis.pcall('HMGET', key, unpack(ARGV, from + s, from + math.min(s + CHUNK, count) - 1))
    if r.err then return nil end
    for i = 1, #r do all[s + i] = r[i] end
  end
  return all
end
local now
local a = 3
local out = {}
for u = 1, tonumber(ARGV[2]) do
  local idem = tonumber(ARGV[a])
  local ne = tonumber(ARGV[a + 1])
  local no = tonumber(ARGV[a + 2])
  local lease, owner
  a = a + 3
  if no > 0 then
    lease = tonumber(ARGV[a])
    owner = ARGV[a + 1]
    a = a + 2
  end
  local status = 1
  if idem > 0 and not redis.call('SET', KEYS[idem], '1', 'NX', 'EX', ARGV[1]) then status = 2 end
  local w = {}
  local failed, wrong
  for i = 1, ne do
    local key = KEYS[tonumber(ARGV[a])]
    local nc = tonumber(ARGV[a + 1])
    local cflags = ARGV[a + 2]
    local nn = tonumber(ARGV[a + 3])
    local ns = tonumber(ARGV[a + 4])
    local nd = tonumber(ARGV[a + 5])
    local c = a + 6
    local v = c + nc
    local nv = 0
    for j = 1, nc do if string.byte(cflags, j) == 118 then nv = nv + 1 end end
    local n = v + nv
    local p = n
    for j = 1, nn do p = p + 2 + tonumber(ARGV[p + 1]) end
    a = p + 2 * ns + nd
    w[4 * i - 3], w[4 * i - 2], w[4 * i - 1], w[4 * i] = key, p, ns, nd
    if status == 1 and not wrong then
      local ok = true
      if nc > 0 then
        local cur = hmget_range(key, c, nc)
        if not cur then
          wrong = key
        else
          local e = v
          for j = 1, nc do
            local want = false
            if string.byte(cflags, j) == 118 then want, e = ARGV[e], e + 1 end
            if cur[j] ~= want then ok = false break end
          end
        end
      end
      if not wrong and ok and nn > 0 then
        local fields = redis.pcall('HKEYS', key)
        if fields.err then
          wrong = key
        else
          local q = n
          for j = 1, nn do
            local kind, count, set = ARGV[q], tonumber(ARGV[q + 1]), {}
            for m = 1, count do set[ARGV[q + 1 + m]] = true end
            q = q + 2 + count
            local seen = 0
            for _, f in ipairs(fields) do
              if string.sub(f, 1, 1) == kind then
                if not set[f] then ok = false end
                seen = seen + 1
              end
            end
            if seen ~= count then ok = false end
          end
        end
      end
      if not wrong and nc == 0 and nn == 0 then
        -- A key of another type would fail a write half-way: refuse the unit before writing.
        local ty = redis.call('TYPE', key).ok
        if ty ~= 'hash' and ty ~= 'none' then wrong = key end
      end
      if not ok then
        failed = failed or {}
        failed[#failed + 1] = i
      end
    end
  end
  local ob = a
  a = a + 2 * no
  if status == 1 and wrong then status = 3 elseif status == 1 and failed then status = 0 end
  if status == 1 then
    for i = 1, ne do
      local key, p, ns, nd = w[4 * i - 3], w[4 * i - 2], w[4 * i - 1], w[4 * i]
      if ns > 0 then call_range('HSET', key, p, p + 2 * ns - 1) end
      if nd > 0 then call_range('HDEL', key, p + 2 * ns, p + 2 * ns + nd - 1) end
    end
    if no > 0 and not now then
      local t = redis.call('TIME')
      now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    end
    for m = 0, no - 1 do
      local id = ARGV[ob + 2 * m]
      if redis.call('HSETNX', KEYS[2], id, ARGV[ob + 2 * m + 1]) == 1 then
        redis.call('ZADD', KEYS[1], now + lease, id)
        redis.call('HSET', KEYS[3], id, owner)
      end
    end
    out[u] = 1
  elseif status == 2 then
    out[u] = 2
  else
    -- Not applied: the key recorded above is taken back.
    if idem > 0 then redis.call('DEL', KEYS[idem]) end
    if status == 3 then
      out[u] = { 3, wrong }
    else
      local r = { 0 }
      for _, i in ipairs(failed) do
        r[#r + 1] = i - 1
        r[#r + 1] = redis.call('HGETALL', w[4 * i - 3])
      end
      out[u] = r
    end
  end
end
return out
`

/**
 * Claims outbox messages whose lease ran out, the earliest first, for a new lease (server clock).
 * KEYS: the lease sorted set, bodies hash, owners hash. ARGV: limit, lease (ms), owner.
 * Returns id, body, id, body...
 */
const CLAIM = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, id in ipairs(ids) do
  local body = redis.call('HGET', KEYS[2], id)
  if body then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
    redis.call('HSET', KEYS[3], id, ARGV[3])
    out[#out + 1] = id
    out[#out + 1] = body
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
`

/** Removes outbox messages. KEYS: the lease sorted set, bodies hash, owners hash. ARGV: ids. */
const REMOVE = `
for s = 1, #ARGV, 1000 do
  local part = { unpack(ARGV, s, math.min(s + 999, #ARGV)) }
  redis.call('ZREM', KEYS[1], unpack(part))
  redis.call('HDEL', KEYS[2], unpack(part))
  redis.call('HDEL', KEYS[3], unpack(part))
end
return 1
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
export const setsScript: Script = script(SETS)
export const flushScript: Script = script(FLUSH)
export const unitsScript: Script = script(UNITS)
export const claimScript: Script = script(CLAIM)
export const removeScript: Script = script(REMOVE)

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
