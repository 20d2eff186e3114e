-- Keeps an instance's entries of a room (or action) alive and removes those
-- of instances whose time ran out. (After the prelude.)
-- ARGV: instance, ttl_ms, may prune
-- Returns {1 if the instance's entries were still there (0: Redis lost
-- them, or they expired: the caller registers them again), what prune
-- removed (nicknames of a room, ids of an action)}.
local now = now_ms()
local gone = expired(now)
local present = redis.call('ZSCORE', KEYS[3], ARGV[1]) and not gone[ARGV[1]]
-- The caller is alive: whatever of its entries remain are written again.
gone[ARGV[1]] = nil
local removed = prune(gone)
refresh(ARGV[1], tonumber(ARGV[2]), now)
return {present and 1 or 0, removed}
