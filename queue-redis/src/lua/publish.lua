-- ARGV: n, then n stored values (the payload, or an envelope of attributes
-- and payload: `src/codec.rs`). Returns the first id; the batch has ids
-- first .. first + n - 1.
local n = tonumber(ARGV[1])
local last = redis.call('INCRBY', K_SEQ, n)
local first = last - n + 1
local members, payloads = {}, {}
for i = 0, n - 1 do
  local id = tostring(first + i)
  members[#members + 1] = id .. ':0'
  payloads[#payloads + 1] = id
  payloads[#payloads + 1] = ARGV[2 + i]
end
redis.call('HSET', K_PAYLOAD, unpack(payloads))
redis.call('RPUSH', K_READY, unpack(members))
wake(n)
return first
