-- ARGV: id, attempt pairs. Returns the 1-based positions of lost leases.
local now = now_ms()
local lost = {}
for i = 1, #ARGV, 2 do
  local id = ARGV[i]
  if held(id, ARGV[i + 1], now) then
    redis.call('ZREM', K_LEASED, id)
    forget(id)
  else
    lost[#lost + 1] = (i + 1) / 2
  end
end
if #lost * 2 < #ARGV then wake_if_drained() end
return lost
