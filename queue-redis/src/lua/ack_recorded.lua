-- ARGV: R, then record.lua's R arguments, then ack.lua's (max attempts,
-- (member, id) pairs). A worker's ack batch of one job in one call: the
-- receipts are recorded and the leases settled together (the two-call
-- order, record then ack, re-runs an item whose ack fails after its
-- receipt; here both land or neither does). Returns ack.lua's reply.
local r = tonumber(ARGV[1])
record(ARGV, 2, r + 1)
return ack(ARGV, r + 2, #ARGV)
