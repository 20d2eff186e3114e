-- Counts a room's participants after removing those of dead instances.
-- (After room_prune.lua.) ARGV: may prune
-- Returns {count, departed nicknames}.
local departed = prune(expired(now_ms()))
return {redis.call('HLEN', KEYS[1]), departed}
