-- Removes every entry one instance has in a room (or action): it shuts
-- down, or registers them again. (After the prelude.)
-- ARGV: instance
-- Returns what was removed (nicknames of a room, ids of an action).
return prune({[ARGV[1]] = true})
