-- ARGV: job, epoch, now (ms). Records the job as halted in EPOCH (the
-- earliest time stays). Returns 1, or 0 when the job has no manifest or
-- is in another epoch (it was resumed since the reading that halted it).
local job = ARGV[1]
if redis.call('HEXISTS', K_JOBS, job) == 0 then return 0 end
local key = job_key(job, 'halt')
local epoch = redis.call('HGET', key, 'epoch') or '0'
if epoch ~= ARGV[2] then return 0 end
redis.call('HSET', key, 'epoch', epoch)
redis.call('HSETNX', key, 'at', ARGV[3])
return 1
