-- Shared by every forloop script. KEYS, all in one hash tag:
-- 1 ready (list), 2 leased (zset member -> deadline ms), 3 delayed (zset
-- member -> due ms), 4 payload (hash id -> item), 5 attrs (hash id ->
-- attributes), 6 dead (list), 7 reason (hash id -> why dead), 8 seq (id
-- counter), 9 wake (markers).
--
-- Lists and sets hold members "ID:ATTEMPTS": the item's id and how many
-- times it has been delivered, so the count travels with the item. A lease
-- (a `leased` member, and the worker's token) is "ID:ATTEMPT:NONCE", the
-- nonce random per delivery from the puller, so a token names one delivery
-- forever: ids repeat after a requeue (attempts start over) or a key loss
-- (`seq` starts over), nonces do not. Time is the server's clock, so every
-- worker agrees on deadlines.
local K_READY, K_LEASED, K_DELAYED, K_PAYLOAD, K_ATTRS, K_DEAD, K_REASON, K_SEQ, K_WAKE =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]

-- A permanent member of `leased`, longer than zset-max-listpack-value (64
-- bytes), at +inf so it never lapses: it keeps the set in its skiplist
-- encoding, where ZADD/ZMSCORE cost O(log n) per member, instead of the
-- compact encoding Redis uses for small sets, where a batch of 100 costs
-- O(n^2) (measured: 268 us per 100-member ZADD; docs/BENCHMARKS.md).
local SENTINEL = '~forloop:keeps-this-sorted-set-in-skiplist-encoding-for-O(log-n)-batches~'

local function keep_skiplist()
  redis.call('ZADD', K_LEASED, 'NX', '+inf', SENTINEL)
end

-- Leases held, not counting the sentinel.
local function leased_count()
  local n = redis.call('ZCARD', K_LEASED)
  if n > 0 and redis.call('ZSCORE', K_LEASED, SENTINEL) then n = n - 1 end
  return n
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- "ID:ATTEMPTS" or a lease "ID:ATTEMPT:NONCE" -> id, attempts.
local function split(member)
  local colon = string.find(member, ':', 1, true)
  local nonce = string.find(member, ':', colon + 1, true)
  return string.sub(member, 1, colon - 1), tonumber(string.sub(member, colon + 1, (nonce or 0) - 1))
end

-- A lease's member without its nonce: what waits in ready, delayed and dead.
local function bare(member)
  local id, attempts = split(member)
  return id .. ':' .. attempts
end

local function wake(n)
  if n > 64 then n = 64 end
  for _ = 1, n do redis.call('RPUSH', K_WAKE, '1') end
  redis.call('LTRIM', K_WAKE, -64, -1)
end

-- The last item was settled: wake every blocked puller, so idle workers
-- see the drain now rather than when their block times out.
local function wake_if_drained()
  if redis.call('LLEN', K_READY) == 0 and leased_count() == 0
      and redis.call('ZCARD', K_DELAYED) == 0 then
    wake(64)
  end
end

local function bury(member, reason)
  local id = split(member)
  redis.call('RPUSH', K_DEAD, bare(member))
  redis.call('HSET', K_REASON, id, reason)
end

-- Release a delivery whose lease ended: deliver the item again, or bury it
-- once it has had all its attempts.
local function release(member, max_attempts, why)
  local _, attempts = split(member)
  if attempts >= max_attempts then
    bury(member, why .. ' after ' .. attempts .. ' deliveries (max attempts ' .. max_attempts .. ')')
  else
    redis.call('RPUSH', K_READY, bare(member))
    wake(1)
  end
end

-- Bring the queue to now: lapse expired leases, release due nacks.
local function reap(now, max_attempts)
  local lapsed = redis.call('ZRANGEBYSCORE', K_LEASED, '-inf', now, 'LIMIT', 0, 1000)
  if #lapsed > 0 then
    redis.call('ZREM', K_LEASED, unpack(lapsed))
    for _, member in ipairs(lapsed) do release(member, max_attempts, 'its lease expired') end
  end
  local due = redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', now, 'LIMIT', 0, 1000)
  if #due > 0 then
    redis.call('ZREM', K_DELAYED, unpack(due))
    redis.call('RPUSH', K_READY, unpack(due))
    wake(#due)
  end
end

-- ARGV[first], ARGV[first + 1], ... are (member, id) pairs: the lease's
-- "ID:ATTEMPT:NONCE" and its id, both from the client, so no string work here.
-- Returns the members and ids whose lease is still live (deadline ahead)
-- and the 1-based positions of the others. One call for the whole batch.
local function split_held(first, now)
  local members = {}
  for i = first, #ARGV, 2 do members[#members + 1] = ARGV[i] end
  if #members == 0 then return {}, {}, {} end
  local deadlines = redis.call('ZMSCORE', K_LEASED, unpack(members))
  local live, ids, lost = {}, {}, {}
  for n, member in ipairs(members) do
    local deadline = deadlines[n]
    if deadline and tonumber(deadline) > now then
      live[#live + 1] = member
      ids[#ids + 1] = ARGV[first + 2 * n - 1]
    else
      lost[#lost + 1] = n
    end
  end
  return live, ids, lost
end

local function forget_all(ids)
  if #ids == 0 then return end
  redis.call('HDEL', K_PAYLOAD, unpack(ids))
  if redis.call('HLEN', K_ATTRS) > 0 then redis.call('HDEL', K_ATTRS, unpack(ids)) end
end

local function ids_of(members)
  local ids = {}
  for n, member in ipairs(members) do ids[n] = split(member) end
  return ids
end
