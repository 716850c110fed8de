-- ARGV: reason, then id, attempt pairs. Returns lost positions.
local reason = ARGV[1]
local now = now_ms()
local lost = {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if held(id, ARGV[i + 1], now) then
    redis.call('ZREM', K_LEASED, id)
    bury(id, reason)
  else
    lost[#lost + 1] = i / 2
  end
end
if #lost * 2 < #ARGV then wake_if_drained() end
return lost
