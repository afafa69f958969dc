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
// Numbers stay below 2^53, so Lua's doubles are exact; idiv divides without rounding.
const groupScript = `
local token = ARGV[1]
local function idiv(a, b) return (a - math.fmod(a, b)) / b end
local out = {}
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
      local bal, last = capacity, now
      local v = redis.call('GET', k)
      if v then
        local sp = string.find(v, ' ', 1, true)
        bal, last = tonumber(string.sub(v, 1, sp - 1)), tonumber(string.sub(v, sp + 1))
        if now > last then
          bal = bal + (now - last)
          last = now
        end
        if bal > capacity then bal = capacity end
      end
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
-- fixed1 is group() for the most common group, one fixed-window check with a positive
-- cost, in one redis.call when it admits: charge first, and take the charge back (or
-- delete the key it created) when that went over the limit. Same answers as group().
local function fixed1(now, k, b, o)
  local limit, wend, cost = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6])
  local v = redis.call('INCRBY', k, cost)
  local c = v - cost
  local reset = wend - now
  if v <= limit then
    if c == 0 then
      redis.call('PEXPIRE', k, math.max(math.ceil(reset / 1000), 0) + 60000)
    end
    out[o + 1], out[o + 2], out[o + 3], out[o + 4] = 1, limit - v, reset, 0
    return
  end
  if c == 0 then
    redis.call('DEL', k)
  else
    redis.call('DECRBY', k, cost)
  end
  local rem = 0
  if c < limit then rem = limit - c end
  out[o + 1], out[o + 2], out[o + 3], out[o + 4] = 0, rem, reset, reset
end
local ngroups = tonumber(ARGV[2])
local ki, ai = 0, 3
for g = 1, ngroups do
  local n = tonumber(ARGV[ai + 1])
  if n == 1 and ARGV[ai + 2] == 'f' and tonumber(ARGV[ai + 7]) > 0 then
    fixed1(tonumber(ARGV[ai]), KEYS[ki + 1], ai + 1, #out)
  else
    group(tonumber(ARGV[ai]), ki, ai + 1, n, #out, token .. ':' .. g)
  end
  ki = ki + n
  ai = ai + 2 + 6 * n
end
return out
`
