-- Appends one event to a room's stream and publishes it, in one atomic step,
-- so that offsets, the stored history and what subscribers receive can
-- never disagree.
-- KEYS: meta (HASH epoch, offset), events (LIST of stamped frames, oldest
--       first), channel (the room's pub/sub channel)
-- ARGV: the event's JSON without its opening '{', an epoch to start if the
--       stream has none (first event, or its history may have been lost),
--       history length, time to live in seconds, envelope header,
--       PUBLISH or SPUBLISH (Redis Cluster), and the event's id marker
--       ('"id":"<uuid>"') when it must be appended once, else ''
-- Returns the stamped frame and 0; or, when an event with that id is still
-- in the history, that event and 1 (nothing appended, nothing published).
--
-- The epoch belongs to one run of the Redis server: a Redis that restarted
-- (empty, or from a snapshot older than the last offsets handed out) or a
-- replica promoted in a failover starts a new epoch, so that an offset is
-- never given out twice under one epoch.
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'run')
local epoch = meta[1]
if not epoch or meta[2] ~= run then
  epoch = ARGV[2]
  -- Frames of a lost epoch must never be served as this one's.
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'run', run)
end
if ARGV[7] ~= '' then
  for _, stored in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
    if string.find(stored, ARGV[7], 1, true) then
      return {stored, 1}
    end
  end
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local frame = '{"epoch":"' .. epoch .. '","offset":' .. offset .. ',' .. ARGV[1]
redis.call('RPUSH', KEYS[2], frame)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call(ARGV[6], KEYS[3], ARGV[5] .. frame)
return {frame, 0}
