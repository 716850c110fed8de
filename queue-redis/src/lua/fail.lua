-- ARGV: delay ms, max attempts, then (member, id) pairs. A failed attempt
-- (`f` ran and failed): a nack (`nack.lua`) that also counts the failure
-- in `failed`, in the same step, so a pull tells it from a lapse. Returns
-- lost positions.
local delay, max_attempts = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local live, ids, lost = split_held(3, now)
if #live > 0 then redis.call('ZREM', K_LEASED, unpack(live)) end
for n, member in ipairs(live) do
  redis.call('HINCRBY', K_FAILED, ids[n], 1)
  local _, attempts = split(member)
  if delay == 0 or attempts >= max_attempts then
    release(member, max_attempts, 'it failed')
  else
    redis.call('ZADD', K_DELAYED, now + delay, bare(member))
  end
end
return lost
