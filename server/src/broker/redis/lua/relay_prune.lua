-- Relay part of the prelude (after expiry.lua). KEYS: clients (HASH id ->
-- registration message), owners (HASH id -> instance), instances.

-- Removes the clients of the instances in `gone`. Returns their ids.
local function prune(gone)
  return prune_entries(gone, 2, function(instance)
    return instance
  end, function(id)
    redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    return id
  end)
end
