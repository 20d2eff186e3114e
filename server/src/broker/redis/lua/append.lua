-- Appends one event to a room's stream and publishes it, in one atomic step,
-- so that offsets, the stored history and what subscribers receive can
-- never disagree; the conditions of the append are checked in the same step.
-- KEYS: meta (HASH epoch, offset), events (LIST of stamped frames, oldest
--       first), channel (the room's pub/sub channel), the room's slow mode
--       (STRING seconds), the author's slow mode wait (STRING, expiring),
--       then the author's mutes, one per mark (STRING "<until ms>\n<marks>")
-- ARGV: 1 the event's JSON without its opening '{', 2 an epoch to start if
--       the stream has none (first event, or its history may have been
--       lost), 3 the most events kept (HISTORY_MAX_EVENTS), 4 time to live
--       in seconds, 5 envelope
--       header, 6 PUBLISH or SPUBLISH (Redis Cluster), 7 the event's id
--       marker ('"id":"<uuid>"') when it must be appended once, else '',
--       8 '1' when the author is held by mutes and slow mode, else '',
--       9 and 10 a stored frame to overwrite first and its replacement
--       ('' and '' when none), 11 what a stored event with the id must
--       also hold to be this author's (see ARGV 7), 12 how many of the
--       newest events an id is looked for in, 13 time to live of the
--       events in seconds (the shorter of 4 and HISTORY_MAX_AGE)
-- Returns {frame, 0} once appended; {that event, 1} when an event of this
-- author with the id is still in the history (nothing appended, nothing
-- published); {'', 2} when the frame to overwrite is no longer stored;
-- {until ms, 3} when the author is muted; {ms to wait, 4} in slow mode;
-- {'', 5} when an event with the id by somebody else is in the history.
--
-- The epoch belongs to one run of the Redis server: a Redis that restarted
-- (empty, or from a snapshot older than the last offsets handed out) or a
-- replica promoted in a failover starts a new epoch, so that an offset is
-- never given out twice under one epoch.
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'run')
local epoch = meta[1]
if not epoch or meta[2] ~= run then
  epoch = ARGV[2]
  -- Frames of a lost epoch must never be served as this one's.
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'run', run)
end
if ARGV[7] ~= '' then
  for _, stored in ipairs(redis.call('LRANGE', KEYS[2], -tonumber(ARGV[12]), -1)) do
    if string.find(stored, ARGV[7], 1, true) then
      if string.find(stored, ARGV[11], 1, true) then
        return {stored, 1}
      end
      return {'', 5}
    end
  end
end
local slow = 0
if ARGV[8] == '1' then
  for i = 6, #KEYS do
    local muted = redis.call('GET', KEYS[i])
    if muted then
      return {string.match(muted, '^%d+'), 3}
    end
  end
  slow = tonumber(redis.call('GET', KEYS[4]) or '0')
  if slow > 0 then
    local wait = redis.call('PTTL', KEYS[5])
    if wait > 0 then
      return {tostring(wait), 4}
    end
  end
end
if ARGV[9] ~= '' then
  local found = false
  for i, stored in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
    if stored == ARGV[9] then
      redis.call('LSET', KEYS[2], i - 1, ARGV[10])
      found = true
      break
    end
  end
  if not found then
    return {'', 2}
  end
end
if slow > 0 then
  redis.call('SET', KEYS[5], '1', 'PX', slow * 1000)
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local frame = '{"epoch":"' .. epoch .. '","offset":' .. offset .. ',' .. ARGV[1]
redis.call('RPUSH', KEYS[2], frame)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
-- Everything in the list is past the age limit that long after the last
-- append: it goes as a whole. A room still written to is trimmed by age in
-- the background (trim.lua).
redis.call('EXPIRE', KEYS[2], ARGV[13])
redis.call(ARGV[6], KEYS[3], ARGV[5] .. frame)
return {frame, 0}
