-- Every dead item is deleted for good. Returns how many.
local n = 0
while true do
  local ids = redis.call('LPOP', K_DEAD, 1000)
  if not ids then break end
  for _, id in ipairs(ids) do
    redis.call('HDEL', K_REASON, id)
    forget(id)
  end
  n = n + #ids
end
return n
