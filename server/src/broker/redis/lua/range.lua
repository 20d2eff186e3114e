-- A stretch of a room's stream by offset, read in one step.
-- KEYS: meta (HASH epoch, offset), events (LIST of stamped frames, oldest
--       first: contiguous offsets ending at the newest)
-- ARGV: 1 the lowest offset wanted, 2 the highest, 3 the most events: the
--       newest of the stretch are kept
-- Returns {epoch, oldest offset retained, the first offset returned, the
-- events of the stretch that are retained, oldest first}.
local epoch = redis.call('HGET', KEYS[1], 'epoch') or ''
local newest = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
local first = newest - redis.call('LLEN', KEYS[2]) + 1
local high = math.min(tonumber(ARGV[2]), newest)
local low = math.max(tonumber(ARGV[1]), first, high - tonumber(ARGV[3]) + 1)
if high < low then
  return {epoch, first, low, {}}
end
return {epoch, first, low, redis.call('LRANGE', KEYS[2], low - first, high - first)}
