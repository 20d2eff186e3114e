-- Takes a room's webhook delivery lease for an instance, or renews it, and
-- reads the room's cursor and stream in the same step; nothing when another
-- instance holds the lease.
-- KEYS: lease (STRING instance id, expiring), cursor (HASH epoch, offset),
--       the stream's meta (HASH epoch, offset) and events (LIST)
-- ARGV: 1 instance id, 2 lease time to live in ms
-- Returns {1, cursor epoch or '', cursor offset or 0, stream epoch or '',
-- stream offset or 0, stored events oldest first} when held (only those
-- after the cursor when it is in the stream's epoch), {0} when not.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return {0}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local cursor = redis.call('HMGET', KEYS[2], 'epoch', 'offset')
local stream = redis.call('HMGET', KEYS[3], 'epoch', 'offset')
local from = 0
if cursor[1] and cursor[1] == stream[1] then
  local stored = redis.call('LLEN', KEYS[4])
  local after = tonumber(stream[2] or '0') - tonumber(cursor[2] or '0')
  from = math.max(0, stored - math.max(after, 0))
end
return {1, cursor[1] or '', tonumber(cursor[2] or '0'), stream[1] or '',
  tonumber(stream[2] or '0'), redis.call('LRANGE', KEYS[4], from, -1)}
