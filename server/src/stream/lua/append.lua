-- Appends one event to a room's stream and publishes it, in one atomic step,
-- so that offsets, the stored history and what subscribers receive can
-- never disagree.
-- KEYS: meta (HASH epoch, offset), events (LIST of stamped frames, oldest
--       first), channel (the room's pub/sub channel)
-- ARGV: the event's JSON without its opening '{', an epoch to start if the
--       stream has none (first event, or its history was lost), history
--       length, time to live in seconds, envelope header
-- Returns the stamped frame.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[2]
  -- Frames of a lost epoch must never be served as this one's.
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local frame = '{"epoch":"' .. epoch .. '","offset":' .. offset .. ',' .. ARGV[1]
redis.call('RPUSH', KEYS[2], frame)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', KEYS[3], ARGV[5] .. frame)
return frame
