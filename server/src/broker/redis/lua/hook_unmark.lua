-- Removes a room's webhook mark unless it changed since its deliverer read
-- it (an event appended meanwhile marked it again).
-- KEYS: marks (HASH room -> mark)
-- ARGV: 1 room, 2 the mark read ('' when there was none)
-- Returns 1 when unchanged (and now removed), 0 when it changed.
if (redis.call('HGET', KEYS[1], ARGV[1]) or '') ~= ARGV[2] then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
