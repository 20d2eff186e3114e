-- Pops a room's events past the age limit, oldest first (each event has
-- its sending time as "ts"; escaped text cannot hold that key's quotes).
-- KEYS: the room's events (LIST of stamped frames, oldest first)
-- ARGV: 1 events sent before this (ms since the Unix epoch) are past the
--       limit
-- Returns {events popped, events left}.
local cutoff = tonumber(ARGV[1])
local popped = 0
while true do
  local oldest = redis.call('LINDEX', KEYS[1], 0)
  local sent = oldest and tonumber(string.match(oldest, '"ts":(%d+)'))
  if not sent or sent >= cutoff then
    break
  end
  redis.call('LPOP', KEYS[1])
  popped = popped + 1
end
return {popped, redis.call('LLEN', KEYS[1])}
