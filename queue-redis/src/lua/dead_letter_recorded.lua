-- ARGV: reason, n, then n (lease, receipt JSON or '' for an item of no
-- job) pairs, then (member, id) pairs. Buries each held item with its
-- worker's receipt in one step: an item is counted dead exactly when it is
-- in the dead place (a lost lease buries nothing and records nothing).
-- Returns lost positions.
local n = tonumber(ARGV[2])
local live, _, lost = split_held(3 + 2 * n, now_ms())
if #live > 0 then
  local receipt_of = {}
  for i = 3, 2 + 2 * n, 2 do receipt_of[ARGV[i]] = ARGV[i + 1] end
  redis.call('ZREM', K_LEASED, unpack(live))
  for _, member in ipairs(live) do bury(member, ARGV[1], receipt_of[member]) end
  wake_if_drained()
end
return lost
