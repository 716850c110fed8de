-- Every dead item is deleted for good. Returns how many.
local n = 0
while true do
  local members = redis.call('LPOP', K_DEAD, 1000)
  if not members then break end
  local ids = ids_of(members)
  redis.call('HDEL', K_REASON, unpack(ids))
  forget_all(ids)
  n = n + #members
end
return n
