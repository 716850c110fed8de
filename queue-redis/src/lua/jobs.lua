-- No ARGV. Every job with a manifest, in one round trip (idle workers ask
-- about once a second): {job, manifest, submitted, done, dead, between, ...}.
-- BITCOUNT reads 125 KB per million items.
local all = redis.call('HGETALL', K_JOBS)
local out = {}
for i = 1, #all, 2 do
  out[#out + 1] = all[i]
  for _, v in ipairs(job_status(all[i], all[i + 1])) do out[#out + 1] = v end
end
return out
