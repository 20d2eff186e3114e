-- Removes a connection from a room; frees its nickname if it still holds it.
-- KEYS: members, pseudos, instances
-- ARGV: conn, pseudo_key, instance id if it was its last member here ('')
-- Returns 1 if the connection was a member (0: already gone or replaced).
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then
  redis.call('HDEL', KEYS[2], ARGV[2])
end
if ARGV[3] ~= '' then
  redis.call('ZREM', KEYS[3], ARGV[3])
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[3])
end
return removed
