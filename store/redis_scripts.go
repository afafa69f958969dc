package store

import "github.com/redis/go-redis/v9"

// txnScript applies one transaction atomically (a Lua script runs alone on the server).
//
// KEYS[1] revision counter, KEYS[2] this call's idempotency marker, then two keys per op:
// KEYS[1+2i] the kind's object hash (id -> JSON), KEYS[2+2i] the kind's mod-revision hash
// (id -> revision), for op i = 1..n. Every key carries the same hash tag, so on Redis Cluster
// they live in one slot and the script may touch them all.
//
// ARGV[1] change channel, ARGV[2] marker lifetime in ms, ARGV[3] revision floor (the highest
// revision the caller has seen: the new revision exceeds it even if Redis lost its data), then
// four per op: type (p|c|d), id, if_revision, data.
//
// Every precondition is checked, in op order and seeing the effect of earlier ops of the same
// transaction, before anything is written; so a failed check leaves no trace.
//
// Reply: {0, newRevision} on success (also when the marker says this very call already ran:
// a client retry after a lost reply must not apply the writes twice), or {1, failedOpIndex,
// exists 0|1, currentModRevision} when a precondition fails.
var txnScript = redis.NewScript(`
local done = redis.call('GET', KEYS[2])
if done then return {0, tonumber(done)} end
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[3])
if floor > cur then cur = floor end
local new = cur + 1
local n = (#ARGV - 3) / 4
local seen = {}
for i = 1, n do
  local a = 3 + (i - 1) * 4
  local typ, id, ifrev = ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  local rk = KEYS[2 + 2 * i]
  local sk = rk .. '\0' .. id
  local st = seen[sk]
  local exists, rev = false, 0
  if st then
    exists, rev = st[1], st[2]
  else
    local v = redis.call('HGET', rk, id)
    if v then exists, rev = true, tonumber(v) end
  end
  local bad = (typ == 'c' and exists) or (typ == 'd' and not exists)
  if ifrev ~= 0 and ((not exists) or rev ~= ifrev) then bad = true end
  if bad then return {1, i - 1, exists and 1 or 0, rev} end
  if typ == 'd' then seen[sk] = {false, 0} else seen[sk] = {true, new} end
end
for i = 1, n do
  local a = 3 + (i - 1) * 4
  local typ, id = ARGV[a + 1], ARGV[a + 2]
  local ok, rk = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  if typ == 'd' then
    redis.call('HDEL', ok, id)
    redis.call('HDEL', rk, id)
  else
    redis.call('HSET', ok, id, ARGV[a + 4])
    redis.call('HSET', rk, id, new)
  end
end
redis.call('SET', KEYS[1], new)
redis.call('SET', KEYS[2], new, 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[1], new)
return {0, new}
`)

// touchScript records a liveness time unless the recorded one is newer. KEYS[1] the liveness
// hash; ARGV[1] the id, ARGV[2] the time in µs since the epoch (exact in a Lua number).
var touchScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and tonumber(cur) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
`)
