-- ARGV: most items to move. The oldest dead items go back to ready with a
-- fresh attempt count, each of a job un-counted there (its dead bit and
-- receipt go: its next death counts again). Returns how many; the caller loops while a call
-- moves a full batch, so no call holds the server for long.
local members = redis.call('LPOP', K_DEAD, tonumber(ARGV[1]))
if not members then return 0 end
local ids = ids_of(members)
local fresh = {}
for i, id in ipairs(ids) do
  fresh[i] = id .. ':0'
  -- Un-counted in the step that moves it: never counted dead while live.
  local job, seq = job_of_id(id)
  if job then uncount(job, seq) end
end
redis.call('HDEL', K_REASON, unpack(ids))
-- A fresh attempt count: no failures either.
redis.call('HDEL', K_FAILED, unpack(ids))
redis.call('RPUSH', K_READY, unpack(fresh))
wake(#members)
return #members
