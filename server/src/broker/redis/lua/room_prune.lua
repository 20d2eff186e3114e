-- Room part of the prelude (after expiry.lua). KEYS: members (HASH conn ->
-- member JSON), pseudos (HASH nickname key -> conn), instances.

-- Removes the members of the instances in `gone` and frees their
-- nicknames. Returns the nicknames removed.
local function prune(gone)
  return prune_entries(gone, 1, function(member)
    return cjson.decode(member).instance
  end, function(conn, member)
    local held = cjson.decode(member)
    redis.call('HDEL', KEYS[1], conn)
    if redis.call('HGET', KEYS[2], held.key) == conn then
      redis.call('HDEL', KEYS[2], held.key)
    end
    return held.pseudo
  end)
end
