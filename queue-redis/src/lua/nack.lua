-- ARGV: delay ms, max attempts, then (member, id) pairs. Returns lost positions.
local delay, max_attempts = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local live, _, lost = split_held(3, now)
if #live > 0 then redis.call('ZREM', K_LEASED, unpack(live)) end
for _, member in ipairs(live) do
  local _, attempts = split(member)
  if delay == 0 or attempts >= max_attempts then
    release(member, max_attempts, 'it was nacked')
  else
    redis.call('ZADD', K_DELAYED, now + delay, bare(member))
  end
end
return lost
