-- Every dead item goes back to ready with a fresh attempt count. Returns how many.
local n = 0
while true do
  local ids = redis.call('LPOP', K_DEAD, 1000)
  if not ids then break end
  for _, id in ipairs(ids) do
    redis.call('HDEL', K_REASON, id)
    redis.call('HDEL', K_ATTEMPTS, id)
    redis.call('RPUSH', K_READY, id)
  end
  n = n + #ids
end
if n > 0 then wake(n) end
return n
