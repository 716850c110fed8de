-- ARGV: (job, seq, 'done' or 'dead', at ms, receipt JSON) per receipt.
-- Counts each (job, seq) once, done beating dead, keeps one receipt per
-- item, and widens each job's first/last settlement. A seq past its job's
-- total, or of a job with no manifest, settles nothing. Returns nothing.
local between = {}
for i = 1, #ARGV, 5 do
  local job, at = ARGV[i], ARGV[i + 3]
  if settle_one(job, ARGV[i + 1], ARGV[i + 2] == 'done', ARGV[i + 4]) then
    local b = between[job]
    if not b then
      between[job] = {at, at}
    else
      if tonumber(at) < tonumber(b[1]) then b[1] = at end
      if tonumber(at) > tonumber(b[2]) then b[2] = at end
    end
  end
end
flush_receipts()
for job, b in pairs(between) do settled_between(job, b[1], b[2]) end
return 0
