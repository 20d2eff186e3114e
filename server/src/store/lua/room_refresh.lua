-- Keeps an instance's members of a room alive and removes those of
-- instances whose time ran out. (After room_prune.lua.)
-- ARGV: instance, ttl_ms, may prune
-- Returns {1 if the instance's entries were still there (0: Redis lost
-- them, or they expired: the caller registers its members again),
-- departed nicknames}.
local now = now_ms()
local gone = expired(now)
local present = redis.call('ZSCORE', KEYS[3], ARGV[1]) and not gone[ARGV[1]]
-- The caller is alive: whatever of its entries remain are written again.
gone[ARGV[1]] = nil
local departed = prune(gone)
refresh(ARGV[1], tonumber(ARGV[2]), now)
return {present and 1 or 0, departed}
