-- ARGV: n, then n pairs (payload, encoded attributes or '').
-- Returns the first id; the batch has ids first .. first + n - 1.
local n = tonumber(ARGV[1])
local last = redis.call('INCRBY', K_SEQ, n)
local first = last - n + 1
local members, payloads, attrs = {}, {}, {}
for i = 0, n - 1 do
  local id = tostring(first + i)
  members[#members + 1] = id .. ':0'
  payloads[#payloads + 1] = id
  payloads[#payloads + 1] = ARGV[2 + 2 * i]
  local a = ARGV[3 + 2 * i]
  if a ~= '' then
    attrs[#attrs + 1] = id
    attrs[#attrs + 1] = a
  end
end
redis.call('HSET', K_PAYLOAD, unpack(payloads))
if #attrs > 0 then redis.call('HSET', K_ATTRS, unpack(attrs)) end
redis.call('RPUSH', K_READY, unpack(members))
wake(n)
return first
