-- Counts a room's participants after removing those of dead instances.
-- (After the room prelude.) ARGV: may prune
-- Returns {count, departed nicknames}.
local departed = prune(expired(now_ms()))
return {redis.call('HLEN', KEYS[1]), departed}
