-- Balance writes of one account (the fence script is prepended).
-- KEYS: bal, ts, status, lease, seq, changes, holder
-- ARGV: fence, now, maxlen, account, last_message_at, received, now_us, nscopes, scope...,
--       (field, content, vts)...   received: upstream receive time (epoch µs) or ''.
--       now_us: the same instant as now (ISO, ms) in epoch µs, kept in each entry as t.
-- The messages built here have a Python twin in app/store/records.py.
-- Returns {count, last, seq, asset, message, ...}: every change written, as XADD wrote it,
-- so the writing instance can apply its own changes without reading them back.
local fenced = fence(KEYS[4], KEYS[7], ARGV[1])
if fenced ~= 0 then return {-fenced, 0} end
local now, maxlen, account = ARGV[2], ARGV[3], ARGV[4]
if ARGV[5] ~= '' then redis.call('HSET', KEYS[3], 'last_message_at', ARGV[5]) end
local recv, now_us = ARGV[6], ARGV[7]
local nscopes = tonumber(ARGV[8])
local scopes = {}
for i = 1, nscopes do scopes[ARGV[8 + i]] = true end
local count, last = 0, 0
local out = {0, 0}
local function written(seq, asset, msg)
  local n = #out
  out[n + 1] = seq
  out[n + 2] = asset
  out[n + 3] = msg
end
local keep = {}
local i = 9 + nscopes
while i <= #ARGV do
  local f, content, vts = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  keep[f] = true
  if redis.call('HGET', KEYS[1], f) ~= content then
    redis.call('HSET', KEYS[1], f, content)
    redis.call('HSET', KEYS[2], f, '["' .. now .. '",' .. vts .. ']')
    last = redis.call('INCR', KEYS[5])
    count = count + 1
    local sep = string.find(f, '|', 1, true)
    local msg = '{"type":"balance","seq":' .. last .. ',"balance":' ..
      string.sub(content, 1, -2) .. ',"updated_at":"' .. now .. '","venue_ts":' .. vts ..
      ',"stale":false}}'
    redis.call('XADD', KEYS[6], 'MAXLEN', '~', maxlen, last .. '-0',
      'a', account, 's', string.sub(f, sep + 1), 'm', msg, 'r', recv, 't', now_us)
    written(last, string.sub(f, sep + 1), msg)
  end
  i = i + 3
end
if nscopes > 0 then
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    local sep = string.find(f, '|', 1, true)
    local wallet = string.sub(f, 1, sep - 1)
    if scopes[wallet] and not keep[f] then
      redis.call('HDEL', KEYS[1], f)
      redis.call('HDEL', KEYS[2], f)
      last = redis.call('INCR', KEYS[5])
      count = count + 1
      local asset = string.sub(f, sep + 1)
      local msg = '{"type":"removed","seq":' .. last .. ',"account":' .. cjson.encode(account) ..
        ',"wallet":' .. cjson.encode(wallet) .. ',"asset":' .. cjson.encode(asset) .. '}'
      redis.call('XADD', KEYS[6], 'MAXLEN', '~', maxlen, last .. '-0',
        'a', account, 's', asset, 'm', msg, 'r', recv, 't', now_us)
      written(last, asset, msg)
    end
  end
end
out[1], out[2] = count, last
return out
