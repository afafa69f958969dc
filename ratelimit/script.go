package ratelimit

import "strconv"

// groupScript evaluates groups of checks. Each group is atomic: every check is decided
// first, and only when all admit are they charged. It is the same arithmetic as
// algorithm.go, on the request time passed in ARGV (never Redis TIME), so results do not
// depend on which instance or Redis node runs it. One call carries one group (Redis
// Cluster: the group's keys share a hash tag) or, on a single node or Sentinel, every group
// of a whole pipelined batch, so Redis enters Lua once per batch instead of once per request.
//
// KEYS: the checks' keys, group after group. ARGV[1] = number of groups, then per group: its
// request time (µs), its number of checks n, and per check: alg, limit, period, burst,
// window_end, cost.
// Returns per check, in order: allowed (0/1, -1 when the script failed on its group),
// remaining, reset, retry_after.
//
// A group of one check (a descriptor with one limit, the common case) takes a path of its
// algorithm that decides and charges at once, without group()'s tables (one script for every
// shape: on a Cluster too, where each call is one group).
//
// Each group runs under pcall: a group the script fails on (a key of another type, say) is
// answered with -1 in its checks' allowed fields and its caller gets an error, while the other
// groups of the call (other callers' requests, packed into the same call) get their answers.
//
// Numbers stay below 2^53 (the service sends no cost above a limit or burst and refuses rules
// past maxRequests and maxSpan), so Lua's doubles are exact; idiv and fdiv divide without rounding.
// Numbers written back are formatted with %d: Lua's tostring keeps 14 digits only.
var groupScript = `
local function idiv(a, b) return (a - math.fmod(a, b)) / b end
local function fdiv(a, b)
  local r = math.fmod(a, b)
  local q = (a - r) / b
  if r < 0 then q = q - 1 end
  return q
end
local out = {}
-- The sliding window's buckets (algorithm.go, sliding.go): w = ceil(p / NB) wide, aligned on
-- the epoch; a unit counts while now - p < (bucket + 1) * w. The key holds "first n0 n1 ...":
-- the first bucket held and each bucket's units.
local NB = ` + strconv.Itoa(slidingBuckets) + `
-- sw_load returns the buckets of k that count at now: the oldest counted (first), the counts
-- from it on, their sum, the bucket width and now's bucket.
local function sw_load(k, now, p)
  local w = math.max(idiv(p + NB - 1, NB), 1)
  local first = fdiv(now - p, w)
  local cur = fdiv(now, w)
  local cs, sum = {}, 0
  local v = redis.call('GET', k)
  if v then
    local b, skip = nil, 0
    for x in string.gmatch(v, '%S+') do
      if not b then
        b = tonumber(x)
        if first > b then skip = first - b else first = b end
      elseif skip > 0 then
        skip = skip - 1
      else
        local c = tonumber(x)
        cs[#cs + 1] = c
        sum = sum + c
      end
    end
  end
  return first, cs, sum, w, cur
end
-- sw_newest is the newest bucket holding units (first - 1 when none).
local function sw_newest(first, cs)
  local i = #cs
  while i > 0 and cs[i] == 0 do i = i - 1 end
  return first + i - 1
end
-- sw_decide is sliding_window's decision: ok, remaining, reset, retry_after.
local function sw_decide(now, limit, p, cost, first, cs, c, w, cur)
  local leaves = function(b) return (b + 1) * w + p - now end
  if c <= limit and cost <= limit - c then
    local reset = 0
    if cost > 0 then
      reset = leaves(math.max(cur, first + #cs - 1))
    elseif c > 0 then
      reset = leaves(sw_newest(first, cs))
    end
    return 1, limit - c - cost, reset, 0
  end
  local rem, reset, retry = 0, 0, p
  if c < limit then rem = limit - c end
  if c > 0 then reset = leaves(sw_newest(first, cs)) end
  if cost <= limit then
    local k, gone, i = c + cost - limit, 0, 0
    repeat
      i = i + 1
      gone = gone + cs[i]
    until gone >= k
    retry = leaves(first + i - 1)
  end
  return 0, rem, reset, retry
end
-- sw_charge adds cost units to now's bucket (or the newest held, when the clock stepped back)
-- and writes the buckets back, expiring when the last one stops counting (plus a minute).
local function sw_charge(k, now, p, cost, first, cs, w, cur)
  if #cs == 0 then
    first = cur
    cs[1] = cost
  else
    for _ = first + #cs - 1, cur - 1 do cs[#cs + 1] = 0 end
    cs[#cs] = cs[#cs] + cost
  end
  local parts = {string.format('%d', first)}
  for i = 1, #cs do parts[i + 1] = string.format('%d', cs[i]) end
  local ends = (first + #cs) * w + p
  redis.call('SET', k, table.concat(parts, ' '), 'PX', math.max(math.ceil((ends - now) / 1000), 0) + 60000)
end
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
local function group(now, ki, ai, n, o)
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
      local first, cs, c, w, cur = sw_load(k, now, p)
      ok, rem, reset, retry = sw_decide(now, limit, p, cost, first, cs, c, w, cur)
      d.c, d.first, d.cs, d.w, d.cur = c, first, cs, w, cur
    elseif alg == 't' then
      local capacity = burst * p
      local bal, last = token_state(k, now, capacity)
      local need = math.min(cost, burst + 1) * p
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
      local ntat = tat + math.min(cost, burst + 1) * p
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
        -- Fixed and sliding windows add to what the key holds now, not to what was read: a
        -- group naming one counter twice (two rules of one algorithm and period) is charged
        -- twice, as in the memory store.
        if d.alg == 'f' then
          if redis.call('INCRBY', k, d.cost) == d.cost then
            redis.call('PEXPIRE', k, math.max(math.ceil((d.wend - now) / 1000), 0) + 60000)
          end
        elseif d.alg == 's' then
          local first, cs, _, w, cur = sw_load(k, now, d.p)
          sw_charge(k, now, d.p, d.cost, first, cs, w, cur)
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
  if cost > limit then -- never fits: read only (an INCRBY of it could overflow)
    local c = tonumber(redis.call('GET', k) or '0')
    local rem = 0
    if c < limit then rem = limit - c end
    return put(0, rem, wend - now, wend - now)
  end
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
local function sliding1(now, k, limit, p, cost)
  local first, cs, c, w, cur = sw_load(k, now, p)
  local ok, rem, reset, retry = sw_decide(now, limit, p, cost, first, cs, c, w, cur)
  if ok == 1 and cost > 0 then sw_charge(k, now, p, cost, first, cs, w, cur) end
  put(ok, rem, reset, retry)
end
local function token1(now, k, p, burst, cost)
  local capacity = burst * p
  local bal, last = token_state(k, now, capacity)
  local need = math.min(cost, burst + 1) * p
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
  local ntat = tat + math.min(cost, burst + 1) * p
  if ntat - now > tau then
    return put(0, idiv(tau - (tat - now), p), tat - now, ntat - tau - now)
  end
  if cost > 0 then
    redis.call('SET', k, ntat, 'PX', math.max(math.ceil((ntat - now) / 1000), 0) + 60000)
  end
  put(1, idiv(tau - (ntat - now), p), ntat - now, 0)
end
-- failed marks the nc checks of a group the script failed on (allowed = -1), from index o.
local function failed(o, nc)
  for i = 0, nc - 1 do
    out[o + i * 4 + 1], out[o + i * 4 + 2], out[o + i * 4 + 3], out[o + i * 4 + 4] = -1, 0, 0, 0
  end
end
local ngroups = tonumber(ARGV[1])
local ki, ai = 0, 2
for g = 1, ngroups do
  local now = tonumber(ARGV[ai])
  local nc = tonumber(ARGV[ai + 1])
  local o = n
  local ok = true
  if nc == 1 then
    local b = ai + 1
    local alg, k, cost = ARGV[b + 1], KEYS[ki + 1], tonumber(ARGV[b + 6])
    if alg == 'f' and cost > 0 then
      ok = pcall(fixed1, now, k, tonumber(ARGV[b + 2]), tonumber(ARGV[b + 5]), cost)
    elseif alg == 's' then
      ok = pcall(sliding1, now, k, tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), cost)
    elseif alg == 't' then
      ok = pcall(token1, now, k, tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]), cost)
    elseif alg == 'l' then
      ok = pcall(leaky1, now, k, tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]), cost)
    else
      ok = pcall(group, now, ki, ai + 1, 1, n)
    end
  else
    ok = pcall(group, now, ki, ai + 1, nc, n)
  end
  if not ok then failed(o, nc) end
  n = o + 4 * nc
  ki = ki + nc
  ai = ai + 2 + 6 * nc
end
return out
`
