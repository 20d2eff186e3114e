-- Takes a nickname in a room for a connection, atomically across instances.
-- (After the room prelude.)
-- ARGV: conn, new_key, old_key ('' on a first join), member_json, session,
--       instance, ttl_ms, may prune
-- Returns {1, replaced conn or '', departed, opened} once the connection
-- holds the nickname, {0, '', departed, 0} when another session holds it;
-- departed are the nicknames of members of dead instances removed on the
-- way, opened is 1 when the room had nobody before.
local now = now_ms()
local departed = prune(expired(now))
local holder = redis.call('HGET', KEYS[2], ARGV[2])
local replaced = ''
if holder and holder ~= ARGV[1] then
  local current = redis.call('HGET', KEYS[1], holder)
  if current then
    if cjson.decode(current).session ~= ARGV[5] then
      return {0, '', departed, 0}
    end
    -- The same browser session reconnected: its stale connection gives way.
    redis.call('HDEL', KEYS[1], holder)
    replaced = holder
  end
end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[1] then
  redis.call('HDEL', KEYS[2], ARGV[3])
end
local opened = redis.call('HLEN', KEYS[1]) == 0 and 1 or 0
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
refresh(ARGV[6], tonumber(ARGV[7]), now)
return {1, replaced, departed, opened}
