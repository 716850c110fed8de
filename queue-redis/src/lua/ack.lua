-- ARGV: max attempts, then (member, id) pairs. Returns the 1-based
-- positions of lost leases (`ack` in common.lua).
return ack(ARGV, 1, #ARGV)
