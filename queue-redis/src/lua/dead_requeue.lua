-- Every dead item goes back to ready with a fresh attempt count. Returns how many.
local n = 0
while true do
  local members = redis.call('LPOP', K_DEAD, 1000)
  if not members then break end
  local ids = ids_of(members)
  local fresh = {}
  for i, id in ipairs(ids) do fresh[i] = id .. ':0' end
  redis.call('HDEL', K_REASON, unpack(ids))
  redis.call('RPUSH', K_READY, unpack(fresh))
  n = n + #members
end
if n > 0 then wake(n) end
return n
