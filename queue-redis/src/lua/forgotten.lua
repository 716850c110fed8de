-- No ARGV. The forgotten jobs' names.
return redis.call('HKEYS', K_FORGOTTEN)
