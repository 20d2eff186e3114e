-- Prelude of the room scripts. KEYS: members (HASH conn -> member JSON),
-- pseudos (HASH nickname key -> conn), instances (ZSET instance -> until
-- when, in ms, its members live unless it refreshes them).

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The instances whose time ran out, as a set.
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

-- Removes the members of the instances in `gone` and frees their
-- nicknames. Returns the nicknames removed.
local function prune(gone)
  local removed = {}
  if next(gone) == nil then
    return removed
  end
  local entries = redis.call('HGETALL', KEYS[1])
  for i = 1, #entries, 2 do
    local conn, held = entries[i], cjson.decode(entries[i + 1])
    if gone[held.instance] then
      redis.call('HDEL', KEYS[1], conn)
      if redis.call('HGET', KEYS[2], held.key) == conn then
        redis.call('HDEL', KEYS[2], held.key)
      end
      removed[#removed + 1] = held.pseudo
    end
  end
  for iid in pairs(gone) do
    redis.call('ZREM', KEYS[3], iid)
  end
  return removed
end

-- Keeps `instance` alive in the room for `ttl` ms; the room's keys outlive
-- the last refresh by a few times that, so an abandoned room disappears.
local function refresh(instance, ttl, now)
  redis.call('ZADD', KEYS[3], now + ttl, instance)
  for i = 1, 3 do
    redis.call('PEXPIRE', KEYS[i], ttl * 3)
  end
end
