-- No ARGV. Removes the queue: its keys and every job's keys (UNLINK, so a
-- large queue is freed in the background). Returns how many keys existed.
local n = 0
for _, job in ipairs(redis.call('SMEMBERS', K_LEDGER)) do
  n = n + redis.call('UNLINK', job_keys_all(job))
end
return n + redis.call('UNLINK', K_FORGOTTEN, K_FAILED, unpack(KEYS))
