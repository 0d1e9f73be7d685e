-- A status change or a venue event (the fence script is prepended).
-- KEYS: status, lease, seq, changes, holder
-- ARGV: fence, maxlen, account, kind ('status' | 'event'), body JSON, message prefix, now_us
-- Returns {count, seq} and, when a change was written, its seq, asset ('') and message.
local fenced = fence(KEYS[2], KEYS[5], ARGV[1])
if fenced ~= 0 then return {-fenced, 0} end
if ARGV[4] == 'status' then
  if redis.call('HGET', KEYS[1], 'doc') == ARGV[5] then return {0, 0} end
  redis.call('HSET', KEYS[1], 'doc', ARGV[5])
end
local seq = redis.call('INCR', KEYS[3])
local msg = '{"seq":' .. seq .. ',' .. ARGV[6] .. ARGV[5] .. '}'
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], seq .. '-0', 'a', ARGV[3], 's', '', 'm', msg,
  't', ARGV[7])
return {1, seq, seq, '', msg}
