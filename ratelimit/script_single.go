package ratelimit

// One lean script per algorithm for the common case on a Redis Cluster, a group of one
// check (a descriptor with one limit). They are the single-check paths of groupScript,
// without its tables, so Redis spends the least time per request. A single fixed-window
// check has none: with cost 1 it goes as native commands (fixedNative), otherwise (cost 0,
// or above 1, both rare) the group script evaluates it. KEYS[1] is the counter; ARGV[1] = now (µs), then
// limit, period, burst, window_end, cost, token. Each returns allowed, remaining, reset,
// retry_after.
var singleScripts = map[Algorithm]string{
	AlgSlidingWindow: `
local now, limit, p, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[6])
local k = KEYS[1]
redis.call('ZREMRANGEBYSCORE', k, '-inf', now - p)
local c = redis.call('ZCARD', k)
if c + cost <= limit then
  local reset = 0
  if cost > 0 then
    reset = p
  elseif c > 0 then
    reset = tonumber(redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')[2]) + p - now
  end
  if cost > 0 then
    for j = 1, cost do
      redis.call('ZADD', k, now, ARGV[7] .. ':' .. j)
    end
    redis.call('PEXPIRE', k, math.max(math.ceil(p / 1000), 0) + 60000)
  end
  return {1, limit - c - cost, reset, 0}
end
local rem = 0
if c < limit then rem = limit - c end
local reset = 0
if c > 0 then
  reset = tonumber(redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')[2]) + p - now
end
local retry = p
if cost <= limit then
  local kth = c + cost - limit
  retry = tonumber(redis.call('ZRANGE', k, kth - 1, kth - 1, 'WITHSCORES')[2]) + p - now
end
return {0, rem, reset, retry}
`,
	AlgTokenBucket: `
local now, p, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[6])
local k = KEYS[1]
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
if bal < need then
  return {0, (bal - math.fmod(bal, p)) / p, capacity - bal, need - bal}
end
bal = bal - need
if cost > 0 then
  redis.call('SET', k, string.format('%d %d', bal, last), 'PX', math.max(math.ceil((capacity - bal) / 1000), 0) + 60000)
end
return {1, (bal - math.fmod(bal, p)) / p, capacity - bal, 0}
`,
	AlgLeakyBucket: `
local now, p, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[6])
local k = KEYS[1]
local tau = burst * p
local tat = now
local v = redis.call('GET', k)
if v and tonumber(v) > now then tat = tonumber(v) end
local ntat = tat + cost * p
if ntat - now > tau then
  local x = tau - (tat - now)
  return {0, (x - math.fmod(x, p)) / p, tat - now, ntat - tau - now}
end
if cost > 0 then
  redis.call('SET', k, ntat, 'PX', math.max(math.ceil((ntat - now) / 1000), 0) + 60000)
end
local x = tau - (ntat - now)
return {1, (x - math.fmod(x, p)) / p, ntat - now, 0}
`,
}
