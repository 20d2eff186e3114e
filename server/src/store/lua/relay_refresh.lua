-- Keeps an instance's clients of an action alive and removes those of
-- instances whose time ran out. (After relay_prune.lua.)
-- ARGV: instance, ttl_ms, may prune
-- Returns 1 if the instance's entries were still there (0: register again).
local now = now_ms()
local gone = expired(now)
local present = redis.call('ZSCORE', KEYS[3], ARGV[1]) and not gone[ARGV[1]]
gone[ARGV[1]] = nil
prune(gone)
refresh(ARGV[1], tonumber(ARGV[2]), now)
return present and 1 or 0
