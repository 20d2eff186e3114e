-- Removes a relay client.
-- KEYS: clients, owners, instances
-- ARGV: id, instance id if it was its last client of the action ('')
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[2] ~= '' then
  redis.call('ZREM', KEYS[3], ARGV[2])
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[3])
end
return 1
