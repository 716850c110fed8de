-- ARGV: (job, seq) pairs. Un-counts each item's death: it is being put
-- back to work. Returns nothing.
for i = 1, #ARGV, 2 do
  local job, seq = job_seq(ARGV[i], ARGV[i + 1])
  if job and counts(job, seq) then uncount(job, seq) end
end
return 0
