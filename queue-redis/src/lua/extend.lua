-- ARGV: lease ms, then id, attempt pairs. Returns lost positions.
local lease = tonumber(ARGV[1])
local now = now_ms()
local lost = {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if held(id, ARGV[i + 1], now) then
    redis.call('ZADD', K_LEASED, 'XX', now + lease, id)
  else
    lost[#lost + 1] = i / 2
  end
end
return lost
