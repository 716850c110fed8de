-- ARGV: limit. Returns {id, attempts, reason, payload, attrs, ...}, oldest first.
local members = redis.call('LRANGE', K_DEAD, 0, tonumber(ARGV[1]) - 1)
local out = {}
for _, member in ipairs(members) do
  local id, attempts = split(member)
  out[#out + 1] = id
  out[#out + 1] = attempts
  out[#out + 1] = redis.call('HGET', K_REASON, id) or ''
  out[#out + 1] = redis.call('HGET', K_PAYLOAD, id) or ''
  out[#out + 1] = redis.call('HGET', K_ATTRS, id) or ''
end
return out
