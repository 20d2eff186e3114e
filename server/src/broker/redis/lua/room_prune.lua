-- Room part of the prelude (after expiry.lua). KEYS: members (HASH conn ->
-- member JSON), pseudos (HASH nickname key -> conn), instances.

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
  forget(gone)
  return removed
end
