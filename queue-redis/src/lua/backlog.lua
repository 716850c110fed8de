-- No ARGV. Returns {ready (incl. delayed), in flight, dead}, moving nothing:
-- a read must not change the queue, and `max_attempts` belongs to the
-- workers, not to a reader. A lapsed lease counts as ready (the next pull
-- releases or buries it); a due nack is already counted in delayed.
local lapsed = redis.call('ZCOUNT', K_LEASED, '-inf', now_ms())
return {
  redis.call('LLEN', K_READY) + redis.call('ZCARD', K_DELAYED) + lapsed,
  leased_count() - lapsed,
  redis.call('LLEN', K_DEAD),
}
