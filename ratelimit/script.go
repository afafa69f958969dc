package ratelimit

// groupScript evaluates groups of checks. Each group is atomic: every check is decided
// first, and only when all admit are they charged. It is the same arithmetic as
// algorithm.go, on the request time passed in ARGV (never Redis TIME), so results do not
// depend on which instance or Redis node runs it. One call carries one group (Redis
// Cluster: the group's keys share a hash tag) or, on a single node or Sentinel, every group
// of a whole pipelined batch, so Redis enters Lua once per batch instead of once per request.
//
// KEYS: the checks' keys, group after group. ARGV[1] = unique token for sliding-log
// members, ARGV[2] = number of groups, then per group: its request time (µs), its number of
// checks n, and per check: alg, limit, period, burst, window_end, cost.
// Returns per check, in order: allowed (0/1), remaining, reset, retry_after.
//
// A group of one check (a descriptor with one limit, the common case) takes a path of its
// algorithm that decides and charges at once, without group()'s tables (one script for every
// shape: on a Cluster too, where each call is one group).
//
// Numbers stay below 2^53, so Lua's doubles are exact; idiv divides without rounding.
const groupScript = `
local token = ARGV[1]
local function idiv(a, b) return (a - math.fmod(a, b)) / b end
local out = {}
-- token_state returns a token bucket's balance (µs of capacity) and last refill time at now:
-- full when the key is absent, refilled since its last update, at most capacity.
local function token_state(k, now, capacity)
  local v = redis.call('GET', k)
  if not v then return capacity, now end
  local sp = string.find(v, ' ', 1, true)
  local bal, last = tonumber(string.sub(v, 1, sp - 1)), tonumber(string.sub(v, sp + 1))
  if now > last then
    bal = bal + (now - last)
    last = now
  end
  if bal > capacity then bal = capacity end
  return bal, last
end
-- group evaluates, at time now, the n checks whose keys follow KEYS[ki] and whose
-- arguments start at ARGV[ai + 1]; its results go to out after index o.
local function group(now, ki, ai, n, o, gtoken)
  local dec = {}
  local all = true
  for i = 1, n do
    local b = ai + (i - 1) * 6
    local alg = ARGV[b + 1]
    local limit = tonumber(ARGV[b + 2])
    local p = tonumber(ARGV[b + 3])
    local burst = tonumber(ARGV[b + 4])
    local wend = tonumber(ARGV[b + 5])
    local cost = tonumber(ARGV[b + 6])
    local k = KEYS[ki + i]
    local ok, rem, reset, retry = 0, 0, 0, 0
    local d = {alg = alg, p = p, cost = cost, burst = burst, wend = wend}
    if alg == 'f' then
      local c = tonumber(redis.call('GET', k) or '0')
      reset = wend - now
      if c + cost <= limit then
        ok = 1
        rem = limit - c - cost
      else
        retry = reset
        if c < limit then rem = limit - c end
      end
      d.c = c
    elseif alg == 's' then
      redis.call('ZREMRANGEBYSCORE', k, '-inf', now - p)
      local c = redis.call('ZCARD', k)
      if c + cost <= limit then
        ok = 1
        rem = limit - c - cost
        if cost > 0 then
          reset = p
        elseif c > 0 then
          reset = tonumber(redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')[2]) + p - now
        end
      else
        if c < limit then rem = limit - c end
        if c > 0 then
          reset = tonumber(redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')[2]) + p - now
        end
        if cost > limit then
          retry = p
        else
          local kth = c + cost - limit
          local o2 = redis.call('ZRANGE', k, kth - 1, kth - 1, 'WITHSCORES')
          retry = tonumber(o2[2]) + p - now
        end
      end
    elseif alg == 't' then
      local capacity = burst * p
      local bal, last = token_state(k, now, capacity)
      local need = cost * p
      if bal >= need then
        bal = bal - need
        ok = 1
      else
        retry = need - bal
      end
      rem = idiv(bal, p)
      reset = capacity - bal
      d.bal, d.last, d.capacity = bal, last, capacity
    elseif alg == 'l' then
      local tau = burst * p
      local tat = now
      local v = redis.call('GET', k)
      if v and tonumber(v) > now then tat = tonumber(v) end
      local ntat = tat + cost * p
      if ntat - now <= tau then
        ok = 1
        rem = idiv(tau - (ntat - now), p)
        reset = ntat - now
      else
        rem = idiv(tau - (tat - now), p)
        reset = tat - now
        retry = ntat - tau - now
      end
      d.ntat = ntat
    else
      ok = 1
    end
    if ok == 0 then all = false end
    dec[i] = d
    out[o + (i - 1) * 4 + 1] = ok
    out[o + (i - 1) * 4 + 2] = rem
    out[o + (i - 1) * 4 + 3] = reset
    out[o + (i - 1) * 4 + 4] = retry
  end
  if all then
    for i = 1, n do
      local d = dec[i]
      local k = KEYS[ki + i]
      if d.cost > 0 then
        if d.alg == 'f' then
          if d.c == 0 then
            redis.call('SET', k, d.cost, 'PX', math.max(math.ceil((d.wend - now) / 1000), 0) + 60000)
          else
            redis.call('INCRBY', k, d.cost)
          end
        elseif d.alg == 's' then
          for j = 1, d.cost do
            redis.call('ZADD', k, now, gtoken .. ':' .. j)
          end
          redis.call('PEXPIRE', k, math.max(math.ceil(d.p / 1000), 0) + 60000)
        elseif d.alg == 't' then
          redis.call('SET', k, string.format('%d %d', d.bal, d.last), 'PX', math.max(math.ceil((d.capacity - d.bal) / 1000), 0) + 60000)
        elseif d.alg == 'l' then
          redis.call('SET', k, d.ntat, 'PX', math.max(math.ceil((d.ntat - now) / 1000), 0) + 60000)
        end
      end
    end
  else
    -- Nothing was charged: report the capacity of the admitting checks as it stands.
    for i = 1, n do
      local d = dec[i]
      if out[o + (i - 1) * 4 + 1] == 1 and d.cost > 0 then
        local b = o + (i - 1) * 4
        if d.alg == 'f' or d.alg == 's' then
          out[b + 2] = out[b + 2] + d.cost
        elseif d.alg == 't' then
          out[b + 2] = idiv(d.bal + d.cost * d.p, d.p)
          out[b + 3] = d.capacity - (d.bal + d.cost * d.p)
        elseif d.alg == 'l' then
          local tau = d.burst * d.p
          local tat = d.ntat - d.cost * d.p
          out[b + 2] = idiv(tau - (tat - now), d.p)
          out[b + 3] = tat - now
        end
      end
    end
  end
end
-- The single-check paths: a group of one check (a descriptor with one limit, the common
-- case) is decided and charged at once, without group()'s tables. Same answers as group().
local n = 0 -- results written so far
local function put(ok, rem, reset, retry)
  out[n + 1], out[n + 2], out[n + 3], out[n + 4] = ok, rem, reset, retry
  n = n + 4
end
-- fixed1: a fixed-window check with a positive cost, in one redis.call when it admits:
-- charge first, and take the charge back when that went over the limit. A counter it finds
-- at 0 gets its expiry (it may have just created it); it is never deleted (a native
-- INCRBY sent by another client after its SET NX would recreate it without one).
local function fixed1(now, k, limit, wend, cost)
  local v = redis.call('INCRBY', k, cost)
  local c = v - cost
  local reset = wend - now
  if c == 0 then
    redis.call('PEXPIRE', k, math.max(math.ceil(reset / 1000), 0) + 60000)
  end
  if v <= limit then
    return put(1, limit - v, reset, 0)
  end
  redis.call('DECRBY', k, cost)
  local rem = 0
  if c < limit then rem = limit - c end
  put(0, rem, reset, reset)
end
local function sliding1(now, k, limit, p, cost, gtoken)
  redis.call('ZREMRANGEBYSCORE', k, '-inf', now - p)
  local c = redis.call('ZCARD', k)
  if c + cost <= limit then
    local reset = 0
    if cost > 0 then
      reset = p
      for j = 1, cost do
        redis.call('ZADD', k, now, gtoken .. ':' .. j)
      end
      redis.call('PEXPIRE', k, math.max(math.ceil(p / 1000), 0) + 60000)
    elseif c > 0 then
      reset = tonumber(redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')[2]) + p - now
    end
    return put(1, limit - c - cost, reset, 0)
  end
  local rem, reset, retry = 0, 0, p
  if c < limit then rem = limit - c end
  if c > 0 then
    reset = tonumber(redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')[2]) + p - now
  end
  if cost <= limit then
    local kth = c + cost - limit
    retry = tonumber(redis.call('ZRANGE', k, kth - 1, kth - 1, 'WITHSCORES')[2]) + p - now
  end
  put(0, rem, reset, retry)
end
local function token1(now, k, p, burst, cost)
  local capacity = burst * p
  local bal, last = token_state(k, now, capacity)
  local need = cost * p
  if bal < need then
    return put(0, idiv(bal, p), capacity - bal, need - bal)
  end
  bal = bal - need
  if cost > 0 then
    redis.call('SET', k, string.format('%d %d', bal, last), 'PX', math.max(math.ceil((capacity - bal) / 1000), 0) + 60000)
  end
  put(1, idiv(bal, p), capacity - bal, 0)
end
local function leaky1(now, k, p, burst, cost)
  local tau = burst * p
  local tat = now
  local v = tonumber(redis.call('GET', k))
  if v and v > now then tat = v end
  local ntat = tat + cost * p
  if ntat - now > tau then
    return put(0, idiv(tau - (tat - now), p), tat - now, ntat - tau - now)
  end
  if cost > 0 then
    redis.call('SET', k, ntat, 'PX', math.max(math.ceil((ntat - now) / 1000), 0) + 60000)
  end
  put(1, idiv(tau - (ntat - now), p), ntat - now, 0)
end
local ngroups = tonumber(ARGV[2])
local ki, ai = 0, 3
for g = 1, ngroups do
  local now = tonumber(ARGV[ai])
  local nc = tonumber(ARGV[ai + 1])
  if nc == 1 then
    local b = ai + 1
    local alg, k, cost = ARGV[b + 1], KEYS[ki + 1], tonumber(ARGV[b + 6])
    if alg == 'f' and cost > 0 then
      fixed1(now, k, tonumber(ARGV[b + 2]), tonumber(ARGV[b + 5]), cost)
    elseif alg == 's' then
      sliding1(now, k, tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), cost, token .. ':' .. g)
    elseif alg == 't' then
      token1(now, k, tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]), cost)
    elseif alg == 'l' then
      leaky1(now, k, tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]), cost)
    else
      group(now, ki, ai + 1, 1, n, token .. ':' .. g)
      n = n + 4
    end
  else
    group(now, ki, ai + 1, nc, n, token .. ':' .. g)
    n = n + 4 * nc
  end
  ki = ki + nc
  ai = ai + 2 + 6 * nc
end
return out
`
