-- Who holds a nickname in a room: its connection and its member entry.
-- KEYS: pseudos (HASH nickname key -> conn), members (HASH conn -> member JSON)
-- ARGV: the nickname key
-- Returns {conn, member JSON}, or {false, false} when nobody holds it.
local conn = redis.call('HGET', KEYS[1], ARGV[1])
if not conn then
  return {false, false}
end
return {conn, redis.call('HGET', KEYS[2], conn)}
