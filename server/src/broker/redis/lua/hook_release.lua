-- Gives a room's webhook lease back, if this instance still holds it.
-- KEYS: lease (STRING instance id)
-- ARGV: 1 instance id
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
