-- ARGV: max, lease ms, max attempts, nonce (random, from the puller).
-- Returns {now, next_event_ms or -1, lease, payload, attrs, failed, ...},
-- each lease "ID:ATTEMPT:NONCE.N", N counting this pull's deliveries,
-- `failed` the item's failed attempts so far (`nack.lua`).
-- A fixed number of calls per batch, whatever its size.
local max, lease, max_attempts, nonce = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local now = now_ms()
reap(now, max_attempts)
local members = redis.call('LPOP', K_READY, max)
local out = {now, -1}
if not members then
  local next_event = -1
  local l = redis.call('ZRANGE', K_LEASED, 0, 0, 'WITHSCORES')
  if #l > 0 and l[1] ~= SENTINEL then next_event = tonumber(l[2]) end
  local d = redis.call('ZRANGE', K_DELAYED, 0, 0, 'WITHSCORES')
  if #d > 0 and (next_event < 0 or tonumber(d[2]) < next_event) then next_event = tonumber(d[2]) end
  out[2] = next_event
  return out
end
-- Numbers become strings through printf in Lua and Redis alike, a
-- measurable cost per item; attempts take few values, so convert each once.
local attempt_text = {}
local ids, attempts = {}, {}
for n, member in ipairs(members) do
  local colon = string.find(member, ':', 1, true)
  ids[n] = string.sub(member, 1, colon - 1)
  local attempt = tonumber(string.sub(member, colon + 1)) + 1
  attempts[n] = attempt
  if not attempt_text[attempt] then attempt_text[attempt] = tostring(attempt) end
end
local payloads = redis.call('HMGET', K_PAYLOAD, unpack(ids))
local attrs = {}
if redis.call('HLEN', K_ATTRS) > 0 then attrs = redis.call('HMGET', K_ATTRS, unpack(ids)) end
local failed = {}
if redis.call('HLEN', K_FAILED) > 0 then failed = redis.call('HMGET', K_FAILED, unpack(ids)) end
local deadline = tostring(now + lease)
local leases = {}
for n, id in ipairs(ids) do
  -- An item without a payload was purged while it waited: skip it.
  if payloads[n] then
    local member = id .. ':' .. attempt_text[attempts[n]] .. ':' .. nonce .. '.' .. (#leases / 2)
    leases[#leases + 1] = deadline
    leases[#leases + 1] = member
    out[#out + 1] = member
    out[#out + 1] = payloads[n]
    out[#out + 1] = attrs[n] or ''
    out[#out + 1] = failed[n] or 0
  end
end
if #leases > 0 then
  keep_skiplist()
  redis.call('ZADD', K_LEASED, unpack(leases))
end
return out
