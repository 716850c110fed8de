-- ARGV: members of the dead list a selective requeue picked (dead_page.lua).
-- Each still there goes back to ready with a fresh attempt count, its job's
-- death un-counted in the same step (as dead_requeue.lua); one no longer
-- there (requeued or purged since the page was read) is skipped, so an item
-- moves once. The rest of the list stays as it was, in order. Returns how
-- many moved.
local ids, fresh = {}, {}
for _, member in ipairs(ARGV) do
  if redis.call('LREM', K_DEAD, 1, member) == 1 then
    local id = split(member)
    ids[#ids + 1] = id
    fresh[#fresh + 1] = id .. ':0'
    local job, seq = job_of_id(id)
    if job then uncount(job, seq) end
  end
end
if #ids == 0 then return 0 end
redis.call('HDEL', K_REASON, unpack(ids))
redis.call('RPUSH', K_READY, unpack(fresh))
wake(#ids)
return #ids
