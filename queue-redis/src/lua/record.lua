-- ARGV: job, first and last settlement (ms), then the done items: their
-- bitmap window (start byte and mask, or '' and ''), largest seq, seqs
-- ("3,4,9") and receipts (lines, see `src/receipts.rs`); then (seq,
-- receipt JSON) per dead item. One job a call. Counts each (job, seq)
-- once, done beating dead, keeps one receipt per item, and widens the
-- job's first/last settlement. A seq past the job's total, or of a job
-- with no manifest, settles nothing. The done ones go first, so a dead
-- one sees its done bit.
local job = ARGV[1]
local counted = ARGV[7] ~= '' and settle_done(job, ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
for i = 9, #ARGV, 2 do
  if counts(job, ARGV[i]) then
    settle_dead(job, ARGV[i], ARGV[i + 1])
    counted = true
  end
end
if counted then settled_between(job, ARGV[2], ARGV[3]) end
return 0
