-- ARGV: (member, id) pairs. A hand-back (a shutdown, a preemption) is no
-- failed attempt: the item goes to the front of `ready` with this delivery
-- uncounted, so its next delivery has the same attempt number (and a new
-- nonce: the old token stays spent). Returns lost positions.
local now = now_ms()
local live, _, lost = split_held(1, now)
if #live > 0 then
  redis.call('ZREM', K_LEASED, unpack(live))
  for _, member in ipairs(live) do
    local id, attempts = split(member)
    redis.call('LPUSH', K_READY, id .. ':' .. (attempts - 1))
  end
  wake(#live)
end
return lost
