-- Takes a nickname in a room for a connection, atomically across instances.
-- KEYS: members, pseudos, instance_chat
-- ARGV: conn, new_key, old_key ('' on a first join), member_json, session, room, prefix
-- Returns {1, replaced_conn or ''} once the connection holds the nickname,
-- {0, ''} when another session holds it.
local holder = redis.call('HGET', KEYS[2], ARGV[2])
local replaced = ''
if holder and holder ~= ARGV[1] then
  local current = redis.call('HGET', KEYS[1], holder)
  if current then
    local held = cjson.decode(current)
    if held.session ~= ARGV[5] then
      return {0, ''}
    end
    -- The same browser session reconnected: its stale connection gives way.
    redis.call('HDEL', KEYS[1], holder)
    redis.call('HDEL', ARGV[7] .. ':instance:' .. held.instance .. ':chat', holder)
    replaced = holder
  end
end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[1] then
  redis.call('HDEL', KEYS[2], ARGV[3])
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[6])
return {1, replaced}
