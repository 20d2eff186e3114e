-- Prelude of the presence and relay scripts (before room_prune.lua or
-- relay_prune.lua). KEYS[3]: instances (ZSET instance -> until when, in ms
-- of Redis time, its entries live unless it refreshes them).

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The instances whose time ran out, as a set. The caller's last ARGV is
-- '1' once it has had Redis answering for a whole time to live: after an
-- outage every instance's time has run out, and the others must get one to
-- refresh before they are taken for dead.
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

local function forget(gone)
  for iid in pairs(gone) do
    redis.call('ZREM', KEYS[3], iid)
  end
end

-- Keeps `instance` alive here for `ttl` ms; the keys outlive the last
-- refresh by a few times that, so an abandoned room or action disappears.
local function refresh(instance, ttl, now)
  redis.call('ZADD', KEYS[3], now + ttl, instance)
  for i = 1, 3 do
    redis.call('PEXPIRE', KEYS[i], ttl * 3)
  end
end

-- Removes the entries of the hash KEYS[hash] that belong to the instances
-- in `gone` (`owner` reads an entry's instance from its value), each with
-- `drop`, which also says what to report of it. Returns the reports.
local function prune_entries(gone, hash, owner, drop)
  local removed = {}
  if next(gone) == nil then
    return removed
  end
  local entries = redis.call('HGETALL', KEYS[hash])
  for i = 1, #entries, 2 do
    if gone[owner(entries[i + 1])] then
      removed[#removed + 1] = drop(entries[i], entries[i + 1])
    end
  end
  forget(gone)
  return removed
end
