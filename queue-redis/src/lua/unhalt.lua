-- ARGV: job. Resumes a halted job: a new epoch, not halted, whose
-- limit counts from the job's dead and settled items now (read here, in
-- the script, so no settlement falls between). Returns 1, or 0 when the
-- job has no manifest.
local job = ARGV[1]
if redis.call('HEXISTS', K_JOBS, job) == 0 then return 0 end
local key = job_key(job, 'halt')
local epoch = tonumber(redis.call('HGET', key, 'epoch') or '0') + 1
local dead = redis.call('BITCOUNT', job_key(job, 'dead'))
local done = redis.call('BITCOUNT', job_key(job, 'done'))
redis.call('HDEL', key, 'at')
redis.call('HSET', key, 'epoch', string.format('%d', epoch), 'dead', dead, 'settled', dead + done)
return 1
