-- ARGV: delay ms, max attempts, failed (1: a failed attempt, `f` ran and
-- failed: counted in `failed` in this same step, so a pull tells it from a
-- lapse; 0: a plain nack), then (member, id) pairs. Returns lost positions.
local delay, max_attempts, failed = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local now = now_ms()
local live, ids, lost = split_held(4, now)
if #live > 0 then redis.call('ZREM', K_LEASED, unpack(live)) end
for n, member in ipairs(live) do
  if failed then redis.call('HINCRBY', K_FAILED, ids[n], 1) end
  local _, attempts = split(member)
  if delay == 0 or attempts >= max_attempts then
    release(member, max_attempts, failed and 'it failed' or 'it was nacked')
  else
    redis.call('ZADD', K_DELAYED, now + delay, bare(member))
  end
end
return lost
