-- ARGV: N, then ack.lua's N arguments (max attempts, (member, id) pairs),
-- then record.lua's. A worker's ack batch of one job in one call: the
-- receipts are recorded and the leases settled together (the two-call
-- order, record then ack, re-runs an item whose ack fails after its
-- receipt; here both land or neither does). Returns ack.lua's reply.
local n = tonumber(ARGV[1])
record(ARGV, n + 2)
return ack(ARGV, 2, n + 1)
