-- Takes a room's webhook delivery lease for an instance, or renews it, and
-- returns the room's cursor; nothing when another instance holds it.
-- KEYS: lease (STRING instance id, expiring), cursor (HASH epoch, offset)
-- ARGV: 1 instance id, 2 lease time to live in ms
-- Returns {1, epoch or '', offset or 0} when held, {0} when not.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return {0}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local cursor = redis.call('HMGET', KEYS[2], 'epoch', 'offset')
return {1, cursor[1] or '', tonumber(cursor[2] or '0')}
