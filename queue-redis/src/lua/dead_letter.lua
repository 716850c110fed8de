-- ARGV: reason, then (member, id) pairs. Returns lost positions.
local live, _, lost = split_held(2, now_ms())
if #live > 0 then
  redis.call('ZREM', K_LEASED, unpack(live))
  for _, member in ipairs(live) do bury(member, ARGV[1]) end
  wake_if_drained()
end
return lost
