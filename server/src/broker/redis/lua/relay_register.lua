-- Records a relay client under its action. (After the relay prelude.)
-- ARGV: id, registration message, instance, ttl_ms, may prune
local now = now_ms()
prune(expired(now))
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
refresh(ARGV[3], tonumber(ARGV[4]), now)
return 1
