-- Removes every client one instance has under an action.
-- (After relay_prune.lua.) ARGV: instance. Returns how many.
return prune({[ARGV[1]] = true})
