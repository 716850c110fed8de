-- ARGV: job, manifest JSON. Records the manifest unless the job has one.
-- Returns {} when it is new, else the job's status (see `job_status`); the
-- client compares the inputs.
local job = ARGV[1]
if redis.call('HSETNX', K_JOBS, job, ARGV[2]) == 1 then
  redis.call('SADD', K_LEDGER, job)
  -- A forgotten name begins anew: its keys went with the forget.
  redis.call('HDEL', K_FORGOTTEN, job)
  return {}
end
return job_status(job, redis.call('HGET', K_JOBS, job))
