-- ARGV: job, now (ms). Removes the job's manifest, counts, receipts and
-- cancellation, and keeps its name among the forgotten. Returns 1, or 0
-- when the job has no manifest.
local job = ARGV[1]
if redis.call('HDEL', K_JOBS, job) == 0 then return 0 end
redis.call('HDEL', K_SETTLED, job)
redis.call('SREM', K_LEDGER, job)
redis.call('UNLINK', job_keys_all(job))
redis.call('HSET', K_FORGOTTEN, job, ARGV[2])
return 1
