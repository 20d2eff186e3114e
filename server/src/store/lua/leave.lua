-- Removes a connection from a room; frees its nickname if it still holds it.
-- KEYS: members, pseudos, instance_chat
-- ARGV: conn, pseudo_key
-- Returns 1 if the connection was a member (0: already gone or replaced).
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then
  redis.call('HDEL', KEYS[2], ARGV[2])
end
redis.call('HDEL', KEYS[3], ARGV[1])
return removed
