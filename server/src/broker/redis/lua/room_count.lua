-- Counts a room's participants after removing those of dead instances, and
-- lists the nicknames of up to ARGV[1] of them.
-- (After the room prelude.) ARGV: shown, may prune
-- Returns {count, departed nicknames, shown nicknames}.
local departed = prune(expired(now_ms()))
local count = redis.call('HLEN', KEYS[1])
local shown = tonumber(ARGV[1])
local members = {}
if shown == 0 then
  -- Only the count was asked for.
elseif count <= shown then
  members = redis.call('HVALS', KEYS[1])
else
  -- A big room: scan only as far as the names shown.
  local cursor = '0'
  repeat
    local page = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', shown)
    cursor = page[1]
    for i = 2, #page[2], 2 do
      members[#members + 1] = page[2][i]
    end
  until cursor == '0' or #members >= shown
end
local names = {}
for i = 1, math.min(#members, shown) do
  names[i] = cjson.decode(members[i]).pseudo
end
return {count, departed, names}
