-- ARGV: job, now (ms). Records the job as cancelled (the earliest time
-- stays). Returns 1, or 0 when the job has no manifest.
local job = ARGV[1]
if redis.call('HEXISTS', K_JOBS, job) == 0 then return 0 end
redis.call('SET', job_key(job, 'cancelled'), ARGV[2], 'NX')
return 1
