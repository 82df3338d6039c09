// The one Lua script a Redis check runs (EVALSHA, EVAL on NOSCRIPT). It applies a batch of
// requests — every check RedisStore received in one event-loop turn, for one Cluster slot — one
// after another, and each request's limits exactly as MemoryStore.check does, step for step: a
// batch of N requests answers as N scripts run back to back would.
//
// A batch names each counter and each limit's numbers once, however many of its requests use them
// (under load most requests of a turn share one tenant's counter and one policy's numbers), so a
// request costs two arguments per limit rather than twelve: what ioredis encodes and writes, and
// what Redis parses, per check.
//
// KEYS: four per counter, all sharing the counter's hash tag so they live in one Cluster slot:
//   state (GCRA TAT string / sliding-window sorted set), sequence (unique window members),
//   violations (hash: count, until), lock (string: locked until). Counters follow each other.
// Every time is compared against the request's `now`, never against Redis TTLs: key expiry only
// collects garbage, so "local" time (a controlled clock) and "server" time behave the same.
// ARGV[1]: "" to use Redis TIME (one clock for every instance, read once per batch), or "L" when
//   each request brings its own now.
// ARGV[2]: number of limit specs S, then 8 per spec:
//   algorithm ("b" bucket | "w" window), enforce ("1" | "0"), cost,
//   p1 (bucket: interval ms; window: limit), p2 (bucket: tolerance ms; window: window ms),
//   lockout after (0 = none), lockout within ms, lockout for ms.
// Then the number of requests, and per request: now in ms ("" with Redis TIME), number of limits,
//   and 2 per limit: its counter (1-based, the counter's keys are KEYS[4c-3..4c]) and its spec
//   (1-based).
// Returns 4 integers per limit, requests in order: status (0 allowed, 1 limited, 2 locked, 4 locked
// by this very request),
// remaining, reset ms, retry ms.
// Within a request, a limit that would admit it while another enforced limit refuses it is not
// charged and reports its uncharged remaining and reset.
//
// Lua numbers are doubles, as in JavaScript; numbers written to Redis use %.17g so a stored TAT
// reads back exactly. Replies are integers (Redis truncates Lua numbers), so times are ceiled.

export const CHECK_SCRIPT = `
local serverNow
if ARGV[1] == '' then
  local t = redis.call('TIME')
  serverNow = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local out = {}

local function fmt(x) return string.format('%.17g', x) end

-- A command on a counter's state key. A key left by the other algorithm (a reload changed the
-- policy's algorithm: a bucket's string where a window's sorted set belongs, or the reverse) gives
-- nil: that counter starts afresh, as in MemoryStore, instead of failing every request of the batch.
-- Any other error is raised.
local function stateCall(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then
    if not string.find(reply.err, 'WRONGTYPE', 1, true) then error(reply) end
    return nil
  end
  return reply
end
local function ms(x) return math.ceil(x) end

-- Token-bucket TATs read or written by this batch, by state key (false: no stored TAT), and the
-- expiry each written one needs; written back once, at the end. Equal to a SET per request:
-- %.17g reads back exactly, and Redis does not expire keys while a script runs.
local tats, dirty, dirtyKeys = {}, {}, {}

-- The specs, read once per batch.
local specCount = tonumber(ARGV[2])
local specs = {}
for s = 1, specCount do
  local b = 2 + (s - 1) * 8
  specs[s] = {
    ARGV[b + 1], ARGV[b + 2] == '1', tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]),
    tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6]), tonumber(ARGV[b + 7]), tonumber(ARGV[b + 8]),
  }
end

-- One request: n limits, each a (counter, spec) pair at ARGV[ab + 1..].
local function apply(ab, n, now)
  local commit = {}
  local enforcedAllowed = true

  for i = 1, n do
    local a = ab + (i - 1) * 2
    local spec = specs[tonumber(ARGV[a + 2])]
    local algo, enforce, cost, p1, p2, lockAfter = spec[1], spec[2], spec[3], spec[4], spec[5], spec[6]
    local k = (tonumber(ARGV[a + 1]) - 1) * 4
    local state, seq, viol, lock = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
    local status, remaining, reset, retry = 0, 0, 0, 0
    local allowed = false
    local newTat = 0
    local unchargedReset = 0

    local locked = 0
    if lockAfter > 0 then
      local untilText = redis.call('GET', lock)
      if untilText then locked = tonumber(untilText) - now end
    end
    if locked > 0 then
      status, remaining, reset, retry = 2, 0, locked, locked
    elseif algo == 'b' then
      local tat = now
      local t = tats[state]
      if t == nil then
        local stored = stateCall('GET', state)
        t = stored and tonumber(stored) or false
        tats[state] = t
      end
      if t and t > now then tat = t end
      newTat = tat + cost * p1
      local allowAt = newTat - p2
      if now < allowAt then
        status = 1
        remaining = math.max(0, math.floor((p2 - (tat - now)) / p1))
        reset, retry = tat - now, allowAt - now
      else
        allowed = true
        remaining = math.floor((p2 - (newTat - now)) / p1)
        reset = newTat - now
        unchargedReset = tat - now
      end
    else
      -- The same key as a token bucket earlier in this batch: had that bucket been charged, its
      -- SET would have replaced whatever the key held, which the window then starts afresh from.
      if dirty[state] ~= nil then redis.call('DEL', state) end
      tats[state], dirty[state] = nil, nil
      if stateCall('ZREMRANGEBYSCORE', state, '-inf', fmt(now - p2)) == nil then redis.call('DEL', state) end
      local count = redis.call('ZCARD', state)
      if count + cost <= p1 then
        allowed = true
        remaining, reset = p1 - count - cost, p2
        if count > 0 then
          local newest = redis.call('ZRANGE', state, -1, -1, 'WITHSCORES')
          unchargedReset = tonumber(newest[2]) + p2 - now
        end
      else
        status = 1
        remaining = math.max(0, p1 - count)
        local needed = count + cost - p1
        if needed <= count then
          local oldest = redis.call('ZRANGE', state, needed - 1, needed - 1, 'WITHSCORES')
          retry = tonumber(oldest[2]) + p2 - now
        else
          retry = p2
        end
        if count > 0 then
          local newest = redis.call('ZRANGE', state, -1, -1, 'WITHSCORES')
          reset = tonumber(newest[2]) + p2 - now
        end
      end
    end

    if status == 1 and lockAfter > 0 then
      local v = redis.call('HMGET', viol, 'count', 'until')
      local count, untilTime = 0, now + spec[7]
      if v[2] and tonumber(v[2]) > now then
        count, untilTime = tonumber(v[1]), tonumber(v[2])
      end
      count = count + 1
      if count >= lockAfter then
        local lockFor = spec[8]
        redis.call('DEL', viol)
        redis.call('SET', lock, fmt(now + lockFor), 'PX', ms(lockFor))
        status, remaining, reset, retry = 4, 0, lockFor, lockFor
      else
        redis.call('HSET', viol, 'count', count, 'until', fmt(untilTime))
        redis.call('PEXPIRE', viol, math.max(1, ms(untilTime - now)))
      end
    end

    if enforce and status ~= 0 then enforcedAllowed = false end
    if allowed then commit[#commit + 1] = { algo, enforce, cost, p2, state, seq, newTat, #out + 1, unchargedReset } end
    out[#out + 1] = status
    out[#out + 1] = remaining
    out[#out + 1] = ms(reset)
    out[#out + 1] = ms(retry)
  end

  for _, c in ipairs(commit) do
    local algo, enforce, cost, p2, state, seq, newTat = c[1], c[2], c[3], c[4], c[5], c[6], c[7]
    if enforce and not enforcedAllowed then
      -- Refused by another limit: this one is not charged, so report it as it stands.
      out[c[8] + 1] = out[c[8] + 1] + cost
      out[c[8] + 2] = ms(c[9])
    else
      if algo == 'b' then
        if dirty[state] == nil then dirtyKeys[#dirtyKeys + 1] = state end
        tats[state] = newTat
        dirty[state] = math.max(1, ms(newTat - now))
      else
        local last = redis.call('INCRBY', seq, cost)
        local members = {}
        for m = last - cost + 1, last do
          members[#members + 1] = fmt(now)
          members[#members + 1] = m
          if #members >= 200 then
            redis.call('ZADD', state, unpack(members))
            members = {}
          end
        end
        if #members > 0 then redis.call('ZADD', state, unpack(members)) end
        redis.call('PEXPIRE', state, ms(p2))
        redis.call('PEXPIRE', seq, ms(p2))
      end
    end
  end
end

local requestsAt = 3 + specCount * 8
local a = requestsAt + 1
for _ = 1, tonumber(ARGV[requestsAt]) do
  local n = tonumber(ARGV[a + 1])
  apply(a + 1, n, serverNow or tonumber(ARGV[a]))
  a = a + 2 + n * 2
end
for _, state in ipairs(dirtyKeys) do
  if dirty[state] ~= nil then
    redis.call('SET', state, fmt(tats[state]), 'PX', dirty[state])
    dirty[state] = nil
  end
end
return out
`;

/**
 * One offence (a lockout) of an escalation key: KEYS[1] a hash { n, first, last } expiring
 * `within` after the first offence. ARGV: now ms ("" = Redis TIME), within ms.
 * Returns { count, first ms, last ms } as strings.
 */
export const OFFENCE_SCRIPT = `
local now = ARGV[1]
if now == '' then
  local t = redis.call('TIME')
  now = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
if n == 1 then
  redis.call('HSET', KEYS[1], 'first', now)
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
end
redis.call('HSET', KEYS[1], 'last', now)
local first = redis.call('HGET', KEYS[1], 'first')
return { n, first, now }
`;
