-- ARGV: first index, how many. One page of the dead list, oldest first,
-- for `list_dead` and for a selective requeue to pick from: {member, id,
-- attempts, reason, payload, attrs, ...}. The member as it stands in the
-- list, so the requeue names exactly the letter it looked at.
local members = redis.call('LRANGE', K_DEAD, tonumber(ARGV[1]), tonumber(ARGV[1]) + tonumber(ARGV[2]) - 1)
local out = {}
for _, member in ipairs(members) do
  local id, attempts = split(member)
  out[#out + 1] = member
  out[#out + 1] = id
  out[#out + 1] = attempts
  out[#out + 1] = redis.call('HGET', K_REASON, id) or ''
  out[#out + 1] = redis.call('HGET', K_PAYLOAD, id) or ''
  out[#out + 1] = redis.call('HGET', K_ATTRS, id) or ''
end
return out
