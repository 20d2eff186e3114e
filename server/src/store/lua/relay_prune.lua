-- Prelude of the relay scripts. KEYS: clients (HASH id -> registration
-- message), owners (HASH id -> instance), instances (ZSET instance -> until
-- when, in ms, its clients live unless it refreshes them).

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The caller's last ARGV is '1' once it has had Redis answering for a whole
-- time to live: after an outage every instance's time has run out, and the
-- others must get one to refresh before they are taken for dead.
local function expired(now)
  local gone = {}
  if ARGV[#ARGV] ~= '1' then
    return gone
  end
  for _, iid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
    gone[iid] = true
  end
  return gone
end

-- Removes the clients of the instances in `gone`; returns how many.
local function prune(gone)
  local removed = 0
  if next(gone) == nil then
    return removed
  end
  local owners = redis.call('HGETALL', KEYS[2])
  for i = 1, #owners, 2 do
    if gone[owners[i + 1]] then
      redis.call('HDEL', KEYS[1], owners[i])
      redis.call('HDEL', KEYS[2], owners[i])
      removed = removed + 1
    end
  end
  for iid in pairs(gone) do
    redis.call('ZREM', KEYS[3], iid)
  end
  return removed
end

local function refresh(instance, ttl, now)
  redis.call('ZADD', KEYS[3], now + ttl, instance)
  for i = 1, 3 do
    redis.call('PEXPIRE', KEYS[i], ttl * 3)
  end
end
