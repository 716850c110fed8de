-- Shared by every forloop script. KEYS, all in one hash tag:
-- 1 ready (list), 2 leased (zset member -> deadline ms), 3 delayed (zset
-- member -> due ms), 4 payload (hash id -> the item, with its job and
-- attributes in an envelope when it has either: `open_value`), 5 attrs (hash id ->
-- attributes, only for items stored before envelopes), 6 dead (list), 7 reason (hash id -> why dead), 8 seq (id
-- counter), 9 wake (markers), 10 jobs (hash job -> manifest JSON), 11
-- settled (hash job -> "FIRST LAST", ms), 12 ledger (set of every job with
-- keys). Per job, beside them (same hash tag): `job:JOB:submitted`, `done`,
-- `dead` (bitmaps, bit = seq) and `job:JOB:receipts` (hash: seq -> a dead
-- receipt's JSON; `bSEQ` -> the done receipts of one record call, JSON
-- lines, SEQ the first of them).
--
-- Lists and sets hold members "ID:ATTEMPTS": the item's id and how many
-- times it has been delivered, so the count travels with the item. A lease
-- (a `leased` member, and the worker's token) is "ID:ATTEMPT:NONCE", the
-- nonce random per delivery from the puller, so a token names one delivery
-- forever: ids repeat after a requeue (attempts start over) or a key loss
-- (`seq` starts over), nonces do not. Time is the server's clock, so every
-- worker agrees on deadlines.
local K_READY, K_LEASED, K_DELAYED, K_PAYLOAD, K_ATTRS, K_DEAD, K_REASON, K_SEQ, K_WAKE =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local K_JOBS, K_SETTLED, K_LEDGER = KEYS[10], KEYS[11], KEYS[12]

-- A permanent member of `leased`, longer than zset-max-listpack-value (64
-- bytes), at +inf so it never lapses: it keeps the set in its skiplist
-- encoding, where ZADD/ZMSCORE cost O(log n) per member, instead of the
-- compact encoding Redis uses for small sets, where a batch of 100 costs
-- O(n^2) (measured: 268 us per 100-member ZADD; docs/BENCHMARKS.md).
local SENTINEL = '~forloop:keeps-this-sorted-set-in-skiplist-encoding-for-O(log-n)-batches~'

local function keep_skiplist()
  redis.call('ZADD', K_LEASED, 'NX', '+inf', SENTINEL)
end

-- Leases held, not counting the sentinel.
local function leased_count()
  local n = redis.call('ZCARD', K_LEASED)
  if n > 0 and redis.call('ZSCORE', K_LEASED, SENTINEL) then n = n - 1 end
  return n
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- "ID:ATTEMPTS" or a lease "ID:ATTEMPT:NONCE" -> id, attempts.
local function split(member)
  local colon = string.find(member, ':', 1, true)
  local nonce = string.find(member, ':', colon + 1, true)
  return string.sub(member, 1, colon - 1), tonumber(string.sub(member, colon + 1, (nonce or 0) - 1))
end

-- A lease's member without its nonce: what waits in ready, delayed and dead.
local function bare(member)
  local id, attempts = split(member)
  return id .. ':' .. attempts
end

local function wake(n)
  if n > 64 then n = 64 end
  for _ = 1, n do redis.call('RPUSH', K_WAKE, '1') end
  redis.call('LTRIM', K_WAKE, -64, -1)
end

-- The last item was settled: wake every blocked puller, so idle workers
-- see the drain now rather than when their block times out.
local function wake_if_drained()
  if redis.call('LLEN', K_READY) == 0 and leased_count() == 0
      and redis.call('ZCARD', K_DELAYED) == 0 then
    wake(64)
  end
end

-- The ledger (see `src/ledger.rs`). A job's keys: '{forloop:NAME}:job:JOB:PART'.
local JOB_PREFIX = string.sub(K_READY, 1, #K_READY - #'ready') .. 'job:'
local function job_key(job, part) return JOB_PREFIX .. job .. ':' .. part end

-- Redis bit offsets stop below 2^32.
local MAX_SEQ = 4294967295

-- A job's keys, built once per script call; `dead_exists` saves a GETBIT
-- per done item while the job has no dead bitmap (the common case);
-- `total` is the manifest's (0 without one: no seq of it counts);
-- `keep_done` whether it asks for done items' receipts (`keep_receipts`:
-- read here, from the manifest, so every worker obeys the job's choice).
local job_keys_cache = {}
local function job_keys(job)
  local k = job_keys_cache[job]
  if not k then
    k = {
      submitted = job_key(job, 'submitted'), done = job_key(job, 'done'),
      dead = job_key(job, 'dead'), receipts = job_key(job, 'receipts'),
      total = 0,
    }
    local manifest = redis.call('HGET', K_JOBS, job)
    if manifest then
      local ok, decoded = pcall(cjson.decode, manifest)
      if ok and type(decoded) == 'table' then
        k.total = tonumber(decoded.total) or 0
        k.keep_done = decoded.keep_receipts == true
      end
    end
    k.dead_exists = redis.call('EXISTS', k.dead) == 1
    job_keys_cache[job] = k
  end
  return k
end

-- Bitmaps spanned by at most this many bytes are updated with one GETRANGE
-- and one SETRANGE, the bits set in Lua; wider spreads go bit by bit.
local WINDOW = 4096

-- Set the bit of every seq of `seqs` (numbers) in bitmap `key`; returns,
-- per seq in order, whether it was set already (a seq twice in `seqs` was
-- set already the second time). Never clears a bit.
local function mark(key, seqs)
  local lo, hi = seqs[1], seqs[1]
  for _, seq in ipairs(seqs) do
    if seq < lo then lo = seq elseif seq > hi then hi = seq end
  end
  local first, last = math.floor(lo / 8), math.floor(hi / 8)
  local was = {}
  if last - first >= WINDOW then
    for i, seq in ipairs(seqs) do was[i] = redis.call('SETBIT', key, seq, 1) == 1 end
    return was
  end
  local bytes = {string.byte(redis.call('GETRANGE', key, first, last), 1, -1)}
  for i = #bytes + 1, last - first + 1 do bytes[i] = 0 end
  for i, seq in ipairs(seqs) do
    local at = math.floor(seq / 8) - first + 1
    local mask = bit.rshift(128, seq % 8)
    was[i] = bit.band(bytes[at], mask) ~= 0
    bytes[at] = bit.bor(bytes[at], mask)
  end
  redis.call('SETRANGE', key, first, string.char(unpack(bytes)))
  return was
end

-- A seq below the job's total: an item of it. A seq at or past the total,
-- or of a job with no manifest, is ignored, so a stray `forloop-seq` can
-- neither complete a job nor grow its bitmaps.
local function counts(job, seq)
  return tonumber(seq) < job_keys(job).total
end

-- Which of two dead receipts (JSON) of one item shows: the later death
-- (a later life; in one life a worker's receipt over the backend's, which
-- has no worker), else the first (`Settled::replaces` in forloop-core).
local function later_death(new, kept)
  local ok_new, a = pcall(cjson.decode, new)
  local ok_kept, b = pcall(cjson.decode, kept)
  if not ok_new or type(a) ~= 'table' then return false end
  if not ok_kept or type(b) ~= 'table' then return true end
  local life_a, life_b = tonumber(a.life) or 0, tonumber(b.life) or 0
  if life_a ~= life_b then return life_a > life_b end
  return (a.worker or '') ~= '' and (b.worker or '') == ''
end

-- Count one dead settlement of (job, seq): once, and not once the item is
-- done (done beats dead); its receipt kept unless the one there shows
-- (`later_death`). A requeue takes the bit and the receipt off
-- (`uncount`), so a later death counts again.
local function settle_dead(job, seq, receipt)
  local k = job_keys(job)
  redis.call('SETBIT', k.submitted, seq, 1)
  if redis.call('GETBIT', k.done, seq) == 0 then
    redis.call('SETBIT', k.dead, seq, 1)
    k.dead_exists = true
    if redis.call('HSETNX', k.receipts, seq, receipt) == 0 then
      local kept = redis.call('HGET', k.receipts, seq)
      if later_death(receipt, kept) then redis.call('HSET', k.receipts, seq, receipt) end
    end
  end
end

-- Un-count the death of (job, seq): the item goes back to work. Its dead
-- bit and receipt go; a done item is left as it is.
local function uncount(job, seq)
  local k = job_keys(job)
  if redis.call('GETBIT', k.dead, seq) == 1 then
    redis.call('SETBIT', k.dead, seq, 0)
    redis.call('HDEL', k.receipts, seq)
  end
end

-- OR `mask` into bitmap `key` from byte `start` on. With `fresh_only`,
-- first check that none of its bits is set already; if one is, change
-- nothing and return false.
local function or_window(key, start, mask, fresh_only)
  local m = {string.byte(mask, 1, -1)}
  local o = {string.byte(redis.call('GETRANGE', key, start, start + #m - 1), 1, -1)}
  for i = 1, #m do
    local a = o[i] or 0
    if fresh_only and bit.band(a, m[i]) ~= 0 then return false end
    o[i] = bit.bor(a, m[i])
  end
  redis.call('SETRANGE', key, start, string.char(unpack(o, 1, #m)))
  return true
end

-- Count done settlements of one job. `seqs` ("3,4,9", text) and `lines`
-- (`src/receipts.rs`: a header line, then a receipt a line, same order)
-- say which; `start` and `mask`, when not '', are their bitmap window and
-- `high` their largest seq. The fast path (every seq of the job and none
-- settled before: a worker's ack batch) ORs the window into the bitmaps
-- and keeps `lines` whole as ONE hash field, `b` and the first seq: no
-- per-item command and no per-item hash entry (per-item fields cost as
-- much server time as the ack itself; docs/BENCHMARKS.md), where the job
-- keeps done receipts (`keep_done`); else the bits alone. Otherwise the
-- seqs go one by one (`mark`) and only the lines of items done for the
-- first time are kept. A dead receipt the item had is dropped: done beats
-- dead. Returns whether any seq counted.
local function settle_done(job, start, mask, high, seqs, lines)
  local k = job_keys(job)
  local fresh
  if mask ~= '' and tonumber(high) < k.total and or_window(k.done, start, mask, true) then
    or_window(k.submitted, start, mask, false)
    if k.dead_exists then
      fresh = {}
      for seq in string.gmatch(seqs, '%d+') do fresh[#fresh + 1] = tonumber(seq) end
    else
      fresh = {tonumber(string.match(seqs, '^%d+'))}
    end
  else
    local all, kept = {}, {}
    for seq in string.gmatch(seqs, '%d+') do
      seq = tonumber(seq)
      all[#all + 1] = seq
      if seq < k.total then kept[#kept + 1] = seq end
    end
    if #kept == 0 then return false end
    mark(k.submitted, kept)
    local was = mark(k.done, kept)
    fresh = {}
    for i, seq in ipairs(kept) do
      if not was[i] then fresh[#fresh + 1] = seq end
    end
    if #fresh == 0 then return true end
    if #fresh < #all then
      -- Keep the header and the lines of the fresh seqs, walking both
      -- lists in order.
      local out, n, want = {}, -1, 1
      for line in string.gmatch(lines, '[^\n]+') do
        n = n + 1
        if n == 0 or all[n] == fresh[want] then
          out[#out + 1] = line
          if n > 0 then want = want + 1 end
        end
      end
      lines = table.concat(out, '\n')
    end
  end
  if k.dead_exists then
    local stale = {}
    for _, seq in ipairs(fresh) do
      if redis.call('SETBIT', k.dead, seq, 0) == 1 then stale[#stale + 1] = seq end
    end
    if #stale > 0 then redis.call('HDEL', k.receipts, unpack(stale)) end
  end
  -- A job that did not ask for them keeps no done receipts: the bits
  -- are its record (docs/BENCHMARKS.md: the ledger's bytes per item).
  if not k.keep_done then return true end
  -- The first fresh seq names the field; it is fresh nowhere else, unless
  -- the done bitmap alone was lost: then a suffix keeps the old field.
  local field, n = 'b' .. fresh[1], 0
  while redis.call('HSETNX', k.receipts, n == 0 and field or (field .. '.' .. n), lines) == 0 do
    n = n + 1
  end
  return true
end

-- Widen `job`'s first/last settlement to take in [first, last] (ms, as text).
local function settled_between(job, first, last)
  redis.call('SADD', K_LEDGER, job)
  local was = redis.call('HGET', K_SETTLED, job)
  if was then
    local a, b = string.match(was, '^(%d+) (%d+)$')
    if a and tonumber(a) < tonumber(first) then first = a end
    if b and tonumber(b) > tonumber(last) then last = b end
  end
  redis.call('HSET', K_SETTLED, job, first .. ' ' .. last)
end

-- A job's counts: {manifest, submitted, done, dead, "FIRST LAST" or '',
-- cancelled (ms) or ''}.
-- A job's halt (hash 'halt': epoch, at, dead, settled) as
-- "EPOCH AT BASE_DEAD BASE_SETTLED" (AT '-' when not halted), or ''.
local function job_halt(job)
  local h = redis.call('HMGET', job_key(job, 'halt'), 'epoch', 'at', 'dead', 'settled')
  if not h[1] then return '' end
  return h[1] .. ' ' .. (h[2] or '-') .. ' ' .. (h[3] or '0') .. ' ' .. (h[4] or '0')
end

local function job_status(job, manifest)
  return {
    manifest,
    redis.call('BITCOUNT', job_key(job, 'submitted')),
    redis.call('BITCOUNT', job_key(job, 'done')),
    redis.call('BITCOUNT', job_key(job, 'dead')),
    redis.call('HGET', K_SETTLED, job) or '',
    redis.call('GET', job_key(job, 'cancelled')) or '',
    job_halt(job),
  }
end

-- The forgotten jobs (hash: job -> when, ms), beside the queue's keys.
local K_FORGOTTEN = string.sub(K_READY, 1, #K_READY - #'ready') .. 'forgotten'

-- Failed attempts per item (hash: id -> n), beside the queue's keys: the
-- attempts where `f` ran and failed (`nack.lua`), so that a pull tells them
-- from lapses (deliveries whose lease ended with no answer). Only items
-- that failed have a field; it goes with the item.
local K_FAILED = string.sub(K_READY, 1, #K_READY - #'ready') .. 'failed'

-- Every key of one job.
local function job_keys_all(job)
  return job_key(job, 'submitted'), job_key(job, 'done'), job_key(job, 'dead'),
    job_key(job, 'receipts'), job_key(job, 'cancelled'), job_key(job, 'halt')
end

-- A job and seq read off an item, checked: the seq as canonical text, or
-- nil when either is missing or the seq is no seq.
local function job_seq(job, seq)
  if not job or not seq or not string.match(seq, '^%d+$') then return nil end
  seq = tonumber(seq)
  if seq > MAX_SEQ then return nil end
  return job, string.format('%d', seq)
end

-- The job and seq (canonical text) an item's encoded attributes name
-- ("len:key len:value ...", see `src/codec.rs`), or nil.
local function job_of(attrs)
  if not attrs or not string.find(attrs, '11:forloop-job', 1, true) then return nil end
  local fields, key, pos = {}, nil, 1
  while true do
    local colon = string.find(attrs, ':', pos, true)
    local len = colon and tonumber(string.sub(attrs, pos, colon - 1))
    if not len or colon + len > #attrs then break end
    local part = string.sub(attrs, colon + 1, colon + len)
    if key then fields[key], key = part, nil else key = part end
    pos = colon + len + 1
  end
  return job_seq(fields['forloop-job'], fields['forloop-seq'])
end

-- At most 1024 bytes of an item, cut on a UTF-8 character boundary.
local function cut_item(payload)
  if #payload <= 1024 then return payload end
  local cut = 1024
  while cut > 0 do
    local b = string.byte(payload, cut + 1)
    if b < 128 or b >= 192 then break end
    cut = cut - 1
  end
  return string.sub(payload, 1, cut)
end

-- What starts a stored value that is an envelope, and the envelope of an
-- item of a job (`src/codec.rs`, `pack`).
local ENVELOPE, JOB_ENVELOPE = '\255\0FLA1', '\255\0FLJ1'

-- The `LEN:BYTES` at `value`'s byte `at`: the bytes and the byte after
-- them, or nil.
local function length_prefixed(value, at)
  local len = string.match(value, '^(%d+):', at)
  if not len then return nil end
  local from = at + #len + 1
  local to = from + tonumber(len) - 1
  if to > #value then return nil end
  return string.sub(value, from, to), to + 1
end

-- A stored value's payload and, for an envelope, its encoded attributes,
-- and for a job's envelope the job and seq (text, unchecked).
local function open_value(value)
  local head, at, job, seq = string.sub(value, 1, #ENVELOPE), #ENVELOPE + 1, nil, nil
  if head == JOB_ENVELOPE then
    seq = string.match(value, '^(%d+):', at)
    if not seq then return value, nil end
    job, at = length_prefixed(value, at + #seq + 1)
    if not job then return value, nil end
  elseif head ~= ENVELOPE then
    return value, nil
  end
  local attrs, rest = length_prefixed(value, at)
  if not attrs then return value, nil end
  return string.sub(value, rest), attrs, job, seq
end

-- An item of a job is buried: its dead receipt, in the same script as the
-- burial (so a lapse on the last attempt still ends the job). The worker
-- writes its own, fuller receipt before it dead-letters; that one came
-- first and stays. Attributes are in the envelope, or (an item from
-- before envelopes) in `attrs`.
-- The job and seq (canonical text) of stored item `id`, and its payload;
-- nil for an item of no job.
local function job_of_id(id)
  local payload, attrs, job, seq = open_value(redis.call('HGET', K_PAYLOAD, id) or '')
  if job then
    job, seq = job_seq(job, seq)
  else
    job, seq = job_of(attrs or redis.call('HGET', K_ATTRS, id))
  end
  return job, seq, payload
end

local function record_burial(id, attempts, reason, given)
  local job, seq, payload = job_of_id(id)
  if not job then return end
  local now = tostring(now_ms())
  local receipt = given
  if not receipt or receipt == '' then
    receipt = cjson.encode({
      job = job, seq = tonumber(seq), state = 'dead', attempt = attempts, seconds = 0,
      worker = '', item = cut_item(payload),
      reason = reason, at = tonumber(now),
    })
  end
  if not counts(job, seq) then return end
  settle_dead(job, seq, receipt)
  settled_between(job, now, now)
end

-- `given`: the worker's receipt (JSON) to keep, else the burial writes one.
local function bury(member, reason, given)
  local id, attempts = split(member)
  redis.call('RPUSH', K_DEAD, bare(member))
  redis.call('HSET', K_REASON, id, reason)
  redis.call('HDEL', K_FAILED, id)
  record_burial(id, attempts, reason, given)
end

local LEASE_ENDED = 'its lease ended with no answer'

-- Release a delivery whose lease ended: deliver the item again, or bury it
-- once it has had all its attempts (the queue's own limit, every delivery
-- counted; a lapse past it is "lost N times").
local function release(member, max_attempts, why)
  local id, attempts = split(member)
  if attempts >= max_attempts then
    local reason = why .. ' after ' .. attempts .. ' deliveries (max attempts ' .. max_attempts .. ')'
    if why == LEASE_ENDED then
      local failed = tonumber(redis.call('HGET', K_FAILED, id) or '0')
      local lost = attempts - failed
      reason = (lost == 1 and 'lost once' or ('lost ' .. lost .. ' times')) .. ' (' .. why .. '; ' .. attempts .. ' deliveries, '
        .. failed .. " of them failed attempts: the queue's own limit is " .. max_attempts .. ' deliveries)'
    end
    bury(member, reason)
  else
    redis.call('RPUSH', K_READY, bare(member))
    wake(1)
  end
end

-- Bring the queue to now: lapse expired leases, release due nacks.
local function reap(now, max_attempts)
  local lapsed = redis.call('ZRANGEBYSCORE', K_LEASED, '-inf', now, 'LIMIT', 0, 1000)
  if #lapsed > 0 then
    redis.call('ZREM', K_LEASED, unpack(lapsed))
    for _, member in ipairs(lapsed) do release(member, max_attempts, LEASE_ENDED) end
  end
  local due = redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', now, 'LIMIT', 0, 1000)
  if #due > 0 then
    redis.call('ZREM', K_DELAYED, unpack(due))
    redis.call('RPUSH', K_READY, unpack(due))
    wake(#due)
  end
end

-- ARGV[first], ARGV[first + 1], ... are (member, id) pairs: the lease's
-- "ID:ATTEMPT:NONCE" and its id, both from the client, so no string work here.
-- Returns the members and ids whose lease is still live (deadline ahead)
-- and the 1-based positions of the others. One call for the whole batch.
local function split_held(first, now)
  local members = {}
  for i = first, #ARGV, 2 do members[#members + 1] = ARGV[i] end
  if #members == 0 then return {}, {}, {} end
  local deadlines = redis.call('ZMSCORE', K_LEASED, unpack(members))
  local live, ids, lost = {}, {}, {}
  for n, member in ipairs(members) do
    local deadline = deadlines[n]
    if deadline and tonumber(deadline) > now then
      live[#live + 1] = member
      ids[#ids + 1] = ARGV[first + 2 * n - 1]
    else
      lost[#lost + 1] = n
    end
  end
  return live, ids, lost
end

local function forget_all(ids)
  if #ids == 0 then return end
  redis.call('HDEL', K_PAYLOAD, unpack(ids))
  if redis.call('HLEN', K_FAILED) > 0 then redis.call('HDEL', K_FAILED, unpack(ids)) end
  if redis.call('HLEN', K_ATTRS) > 0 then redis.call('HDEL', K_ATTRS, unpack(ids)) end
end

local function ids_of(members)
  local ids = {}
  for n, member in ipairs(members) do ids[n] = split(member) end
  return ids
end

-- Record one job's settlements; `args[at .. last]` as record.lua's ARGV
-- (see there). Returns nothing.
local function record(args, at, last)
  local job = args[at]
  local counted = args[at + 6] ~= ''
    and settle_done(job, args[at + 3], args[at + 4], args[at + 5], args[at + 6], args[at + 7])
  for i = at + 8, last, 2 do
    if counts(job, args[i]) then
      settle_dead(job, args[i], args[i + 1])
      counted = true
    end
  end
  if counted then settled_between(job, args[at + 1], args[at + 2]) end
end

-- Ack: `args[at]` is max attempts, `args[at + 1 .. last]` (member, id)
-- pairs. Returns the 1-based positions of lost leases. Expired leases are
-- reaped first, so a member still in `leased` is live, and one ZREM both
-- checks and settles it (an integer reply: no score to format and parse,
-- measured in BENCHMARKS.md).
local function ack(args, at, last)
  reap(now_ms(), tonumber(args[at]))
  local ids, lost = {}, {}
  for i = at + 1, last, 2 do
    if redis.call('ZREM', K_LEASED, args[i]) == 1 then
      ids[#ids + 1] = args[i + 1]
    else
      lost[#lost + 1] = (i - at + 1) / 2
    end
  end
  if #ids > 0 then
    forget_all(ids)
    wake_if_drained()
  end
  return lost
end
