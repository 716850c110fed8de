-- ARGV: max, lease ms, max attempts.
-- Returns {now, next_event_ms or -1, id, attempt, payload, attrs, ...}.
local max, lease, max_attempts = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
reap(now, max_attempts)
local ids = redis.call('LPOP', K_READY, max)
local out = {now, -1}
if not ids then
  local next_event = -1
  local l = redis.call('ZRANGE', K_LEASED, 0, 0, 'WITHSCORES')
  if #l > 0 then next_event = tonumber(l[2]) end
  local d = redis.call('ZRANGE', K_DELAYED, 0, 0, 'WITHSCORES')
  if #d > 0 and (next_event < 0 or tonumber(d[2]) < next_event) then next_event = tonumber(d[2]) end
  out[2] = next_event
  return out
end
local deadline = now + lease
for _, id in ipairs(ids) do
  local payload = redis.call('HGET', K_PAYLOAD, id)
  if payload then
    local attempt = redis.call('HINCRBY', K_ATTEMPTS, id, 1)
    redis.call('ZADD', K_LEASED, deadline, id)
    out[#out + 1] = id
    out[#out + 1] = attempt
    out[#out + 1] = payload
    out[#out + 1] = redis.call('HGET', K_ATTRS, id) or ''
  end
end
return out
