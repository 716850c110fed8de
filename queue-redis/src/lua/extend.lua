-- ARGV: lease ms, then (member, id) pairs. Returns lost positions.
local now = now_ms()
local live, _, lost = split_held(2, now)
if #live > 0 then
  local entries = {}
  local deadline = tostring(now + tonumber(ARGV[1]))
  for _, id in ipairs(live) do
    entries[#entries + 1] = deadline
    entries[#entries + 1] = id
  end
  redis.call('ZADD', K_LEASED, 'XX', unpack(entries))
end
return lost
