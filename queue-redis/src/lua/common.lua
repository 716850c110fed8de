-- Shared by every forloop script. KEYS, all in one hash tag:
-- 1 ready (list of ids), 2 leased (zset id -> deadline ms), 3 delayed
-- (zset id -> due ms), 4 payload (hash), 5 attrs (hash), 6 attempts (hash),
-- 7 dead (list), 8 reason (hash), 9 seq (counter), 10 wake (list of markers).
-- Time is the server's clock, so every worker agrees on deadlines.
local K_READY, K_LEASED, K_DELAYED, K_PAYLOAD, K_ATTRS, K_ATTEMPTS, K_DEAD, K_REASON, K_SEQ, K_WAKE =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function wake(n)
  if n > 64 then n = 64 end
  for _ = 1, n do redis.call('RPUSH', K_WAKE, '1') end
  redis.call('LTRIM', K_WAKE, -64, -1)
end

-- The last item was settled: wake every blocked puller, so idle workers
-- see the drain now rather than when their block times out.
local function wake_if_drained()
  if redis.call('LLEN', K_READY) == 0 and redis.call('ZCARD', K_LEASED) == 0
      and redis.call('ZCARD', K_DELAYED) == 0 then
    wake(64)
  end
end

local function bury(id, reason)
  redis.call('RPUSH', K_DEAD, id)
  redis.call('HSET', K_REASON, id, reason)
end

-- Release an item whose lease ended: deliver it again, or bury it once it
-- has had all its attempts.
local function release(id, max_attempts, why)
  local attempts = tonumber(redis.call('HGET', K_ATTEMPTS, id) or '0')
  if attempts >= max_attempts then
    bury(id, why .. ' after ' .. attempts .. ' deliveries (max attempts ' .. max_attempts .. ')')
  else
    redis.call('RPUSH', K_READY, id)
    wake(1)
  end
end

-- Bring the queue to now: lapse expired leases, release due nacks.
local function reap(now, max_attempts)
  local lapsed = redis.call('ZRANGEBYSCORE', K_LEASED, '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(lapsed) do
    redis.call('ZREM', K_LEASED, id)
    release(id, max_attempts, 'its lease expired')
  end
  local due = redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    redis.call('ZREM', K_DELAYED, id)
    redis.call('RPUSH', K_READY, id)
  end
  if #due > 0 then wake(#due) end
end

-- Whether (id, attempt) is still the item's live lease.
local function held(id, attempt, now)
  local deadline = redis.call('ZSCORE', K_LEASED, id)
  return deadline and tonumber(deadline) > now and redis.call('HGET', K_ATTEMPTS, id) == attempt
end

local function forget(id)
  redis.call('HDEL', K_PAYLOAD, id)
  redis.call('HDEL', K_ATTRS, id)
  redis.call('HDEL', K_ATTEMPTS, id)
end
