-- Removes every member one instance has in a room (it shuts down, or
-- registers its members again). (After room_prune.lua.)
-- ARGV: instance
-- Returns the nicknames removed.
return prune({[ARGV[1]] = true})
