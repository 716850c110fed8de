-- ARGV: max attempts. Returns {ready (incl. delayed), in flight, dead}.
reap(now_ms(), tonumber(ARGV[1]))
return {
  redis.call('LLEN', K_READY) + redis.call('ZCARD', K_DELAYED),
  leased_count(),
  redis.call('LLEN', K_DEAD),
}
