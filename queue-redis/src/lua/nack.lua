-- ARGV: delay ms, max attempts, then id, attempt pairs. Returns lost positions.
local delay, max_attempts = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local lost = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  if held(id, ARGV[i + 1], now) then
    redis.call('ZREM', K_LEASED, id)
    if delay == 0 or tonumber(ARGV[i + 1]) >= max_attempts then
      release(id, max_attempts, 'it was nacked')
    else
      redis.call('ZADD', K_DELAYED, now + delay, id)
    end
  else
    lost[#lost + 1] = (i - 1) / 2
  end
end
return lost
