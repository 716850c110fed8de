-- ARGV: job, first and last settlement (ms), then the done items: their
-- bitmap window (start byte and mask, or '' and ''), largest seq, seqs
-- ("3,4,9") and receipts (lines, see `src/receipts.rs`); then (seq,
-- receipt JSON) per dead item. One job a call. Counts each (job, seq)
-- once, done beating dead, keeps one receipt per item, and widens the
-- job's first/last settlement. A seq past the job's total, or of a job
-- with no manifest, settles nothing. The done ones go first, so a dead
-- one sees its done bit.
record(ARGV, 1, #ARGV)
return 0
