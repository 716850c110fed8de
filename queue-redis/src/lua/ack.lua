-- ARGV: (member, id) pairs. Returns the 1-based positions of lost leases.
local live, ids, lost = split_held(1, now_ms())
if #live > 0 then
  redis.call('ZREM', K_LEASED, unpack(live))
  forget_all(ids)
  wake_if_drained()
end
return lost
