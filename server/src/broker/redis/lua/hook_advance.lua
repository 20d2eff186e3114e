-- Moves a room's webhook cursor, only for the instance holding the lease
-- (an instance that lost it must not move the cursor of the one that took
-- it over), and renews the lease.
-- KEYS: lease (STRING instance id, expiring), cursor (HASH epoch, offset)
-- ARGV: 1 instance id, 2 lease time to live in ms, 3 epoch, 4 offset,
--       5 the cursor's time to live in seconds (the stream's)
-- Returns 1 when moved, 0 when the lease is another's or gone.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], 'epoch', ARGV[3], 'offset', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return 1
