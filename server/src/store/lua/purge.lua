-- Removes every entry of dead instances (heartbeat key expired), or of one
-- named instance that is shutting down.
-- ARGV: prefix, instance id ('' = every instance whose heartbeat expired)
-- Returns a flat list room1, pseudo1, room2, pseudo2 ... of members removed.
local p = ARGV[1]
local removed = {}

local function purge(iid)
  local chat = p .. ':instance:' .. iid .. ':chat'
  local entries = redis.call('HGETALL', chat)
  for i = 1, #entries, 2 do
    local conn, room = entries[i], entries[i + 1]
    local members = p .. ':room:' .. room .. ':members'
    local member = redis.call('HGET', members, conn)
    if member then
      redis.call('HDEL', members, conn)
      local m = cjson.decode(member)
      local pseudos = p .. ':room:' .. room .. ':pseudos'
      if redis.call('HGET', pseudos, m.key) == conn then
        redis.call('HDEL', pseudos, m.key)
      end
      removed[#removed + 1] = room
      removed[#removed + 1] = m.pseudo
    end
  end
  local relay = p .. ':instance:' .. iid .. ':relay'
  entries = redis.call('HGETALL', relay)
  for i = 1, #entries, 2 do
    redis.call('SREM', p .. ':relay:action:' .. entries[i + 1], entries[i])
    redis.call('DEL', p .. ':relay:client:' .. entries[i])
  end
  redis.call('DEL', chat, relay, p .. ':instance:' .. iid .. ':alive')
  redis.call('SREM', p .. ':instances', iid)
end

if ARGV[2] ~= '' then
  purge(ARGV[2])
else
  for _, iid in ipairs(redis.call('SMEMBERS', p .. ':instances')) do
    if redis.call('EXISTS', p .. ':instance:' .. iid .. ':alive') == 0 then
      purge(iid)
    end
  end
end
return removed
