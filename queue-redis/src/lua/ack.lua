-- ARGV: max attempts, then (member, id) pairs. Returns the 1-based
-- positions of lost leases. Expired leases are reaped first, so a member
-- still in `leased` is live, and one ZREM both checks and settles it (an
-- integer reply: no score to format and parse, measured in BENCHMARKS.md).
reap(now_ms(), tonumber(ARGV[1]))
local ids, lost = {}, {}
for i = 2, #ARGV, 2 do
  if redis.call('ZREM', K_LEASED, ARGV[i]) == 1 then
    ids[#ids + 1] = ARGV[i + 1]
  else
    lost[#lost + 1] = i / 2
  end
end
if #ids > 0 then
  forget_all(ids)
  wake_if_drained()
end
return lost
