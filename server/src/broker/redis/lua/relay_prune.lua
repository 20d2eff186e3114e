-- Relay part of the prelude (after expiry.lua). KEYS: clients (HASH id ->
-- registration message), owners (HASH id -> instance), instances.

-- Removes the clients of the instances in `gone`. Returns their ids.
local function prune(gone)
  local removed = {}
  if next(gone) == nil then
    return removed
  end
  local owners = redis.call('HGETALL', KEYS[2])
  for i = 1, #owners, 2 do
    if gone[owners[i + 1]] then
      redis.call('HDEL', KEYS[1], owners[i])
      redis.call('HDEL', KEYS[2], owners[i])
      removed[#removed + 1] = owners[i]
    end
  end
  forget(gone)
  return removed
end
