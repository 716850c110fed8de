-- ARGV: most items to delete. The oldest dead items are deleted for good.
-- Returns how many; the caller loops while a call deletes a full batch.
local members = redis.call('LPOP', K_DEAD, tonumber(ARGV[1]))
if not members then return 0 end
local ids = ids_of(members)
redis.call('HDEL', K_REASON, unpack(ids))
forget_all(ids)
return #members
