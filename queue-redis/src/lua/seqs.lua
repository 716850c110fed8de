-- ARGV: job. Returns {} when the job has no manifest, else {manifest,
-- submitted, done, dead} with the three bitmaps whole (bit = seq).
local job = ARGV[1]
local manifest = redis.call('HGET', K_JOBS, job)
if not manifest then return {} end
return {
  manifest,
  redis.call('GET', job_key(job, 'submitted')) or '',
  redis.call('GET', job_key(job, 'done')) or '',
  redis.call('GET', job_key(job, 'dead')) or '',
}
