-- The fence, prepended to every write script: the lease must hold the writer's token.
-- A lease that lapsed while Redis was unreachable still counts as the writer's when nobody
-- acquired the account since (the holder is the writer's token): the owner's pending
-- writes are then kept, not refused (see app.leases). Lease and holder both gone means
-- Redis lost its data: a write now would show the account's latest changes alone, as if
-- they were its whole state, so it waits (code 2) until the owner takes the lease back and
-- sends the full state with it.
-- fence(): 0 the write goes, 1 another instance owns the account, 2 the data set was lost.
local function fence(lease, holder, token)
  if token == '' then return 0 end
  local current = redis.call('GET', lease)
  if current == token then return 0 end
  if current then return 1 end
  local last = redis.call('GET', holder)
  if last == false then return 2 end
  if last ~= token then return 1 end
  return 0
end
