"""The Lua scripts of the Redis session store: each runs atomically on the shard of one session.

Every session script gets the session's five keys (``SessionKeys.all()``: members, owners, counters,
hubs, tokens) and touches only keys with the session's hash tag, so it runs on one Redis Cluster slot.
A script either does all its writes and its notification (``PUBLISH``/``SPUBLISH``, named by ARGV[1])
or none: nothing else runs on that shard in between, so no reader sees half a signal. Times come from
the shard's own clock (``TIME``), never from a hub, so a hub whose clock steps cannot extend its lease.
Scripts answer a list whose first element is a status string (``ok`` or the reason for a refusal).
"""

from __future__ import annotations

# Shared by every session script: Redis time, the keys, the hub's lease in this session, key TTLs and
# the destruction of one member (used by leave, force-disconnect and the sweep, so there is one path).
_PRELUDE = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local M, O, C, H, TK = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local function lease(hub)
  local s = redis.call('ZSCORE', H, hub)
  if not s then return 'absent' end
  if tonumber(s) >= now then return 'live' end
  return 'dead'
end
local function touch(ttl)
  for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, ttl) end
end
local function destroy(pub, ch, prefix, conn, owner, reason)
  local member = redis.call('HGET', M, conn)
  redis.call('HDEL', M, conn)
  redis.call('HDEL', O, conn)
  redis.call('HDEL', C, 's:'..conn, 'b:'..conn, 'i:'..conn, 'e:'..conn, 'h:'..conn)
  local tok = cjson.decode(member)['token_id']
  if type(tok) == 'string' and redis.call('HINCRBY', TK, tok, -1) <= 0 then redis.call('HDEL', TK, tok) end
  redis.call('DEL', prefix..'q:'..conn, prefix..'nk:'..conn)
  redis.call(pub, ch, '{"k":"d","h":'..cjson.encode(owner)..',"r":'..cjson.encode(reason)
    ..',"m":'..member..'}')
end
"""

# ARGV: pub, channel, hub, conn, member_json, token_id, secret_digest, max_session, max_token, ttl, lease
JOIN = _PRELUDE + r"""
local pub, ch, hub, conn = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local st = lease(hub)
if st == 'dead' then return {'fenced'} end
if redis.call('HEXISTS', M, conn) == 1 then return {'exists'} end
local maxs, maxt = tonumber(ARGV[8]), tonumber(ARGV[9])
if maxs > 0 and redis.call('HLEN', M) >= maxs then return {'full'} end
if maxt > 0 and tonumber(redis.call('HGET', TK, ARGV[6]) or '0') >= maxt then return {'tokenfull'} end
if st == 'absent' then redis.call('ZADD', H, now + tonumber(ARGV[11]), hub) end
redis.call('HSET', M, conn, ARGV[5])
redis.call('HSET', O, conn, hub)
redis.call('HSET', C, 'e:'..conn, 1, 'h:'..conn, ARGV[7], 's:'..conn, 0, 'b:'..conn, 0, 'i:'..conn, 0)
redis.call('HINCRBY', TK, ARGV[6], 1)
touch(tonumber(ARGV[10]))
redis.call(pub, ch, '{"k":"j","h":'..cjson.encode(hub)..',"m":'..ARGV[5]..'}')
return {'ok', redis.call('HVALS', M)}
"""

# ARGV: pub, channel, hub, sender ('' = REST), to ('' = everyone), retry '1'|'0', body_json, maxlen,
#       ttl, signal_id, prefix
SIGNAL = _PRELUDE + r"""
local pub, ch, hub, sender, to = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local st = lease(hub)
if st == 'dead' or (st == 'absent' and sender ~= '') then return {'fenced'} end
if sender ~= '' and redis.call('HGET', O, sender) ~= hub then return {'notowner'} end
local recv
if to ~= '' then
  local h = redis.call('HGET', O, to)
  if not h then return {'nomember'} end
  recv = {to, h}
else
  recv = redis.call('HGETALL', O)
end
local retry = ARGV[6] == '1'
local maxlen, ttl, body, prefix = ARGV[8], tonumber(ARGV[9]), ARGV[7], ARGV[11]
local out, parts = {}, {}
for i = 1, #recv, 2 do
  local c, h = recv[i], recv[i + 1]
  local seq = redis.call('HINCRBY', C, 's:'..c, 1)
  if retry then
    local q = prefix..'q:'..c
    redis.call('XADD', q, 'MAXLEN', '~', maxlen, seq..'-0', 'b', body)
    redis.call('PEXPIRE', q, ttl)
    redis.call('HSET', C, 'b:'..c, seq)
  end
  out[#out + 1] = c
  out[#out + 1] = seq
  out[#out + 1] = h
  parts[#parts + 1] = '['..cjson.encode(c)..','..seq..','..cjson.encode(h)..']'
end
if sender ~= '' then redis.call('HSET', C, 'i:'..sender, ARGV[10]) end
redis.call(pub, ch, '{"k":"s","t":'..(retry and 'true' or 'false')
  ..',"r":['..table.concat(parts, ',')..'],"b":'..body..'}')
return {'ok', out}
"""

# ARGV: pub, channel, hub, conn, secret_digest, new_secret_digest, token_id, last_seq, ttl, lease, prefix,
#       block_base_ms, block_max_ms, max_replay, by_grant '1'|'0', role, data (by_grant: any token granting
#       the member's role and data may resume it, as on one hub; else only the token it joined with)
RESUME = _PRELUDE + r"""
local pub, ch, hub, conn, prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[11]
local st = lease(hub)
if st == 'dead' then return {'fenced'} end
local member = redis.call('HGET', M, conn)
if not member then return {'nomember'} end
local blk, nxt = prefix..'rb:'..ARGV[7], prefix..'rn:'..ARGV[7]
if redis.call('PTTL', blk) > 0 then return {'blocked'} end
local mj = cjson.decode(member)
if ARGV[15] == '1' then
  if mj['role'] ~= ARGV[16] or mj['data'] ~= ARGV[17] then return {'forbidden'} end
elseif mj['token_id'] ~= ARGV[7] then return {'forbidden'} end
if redis.call('HGET', C, 'h:'..conn) ~= ARGV[5] then
  local d = tonumber(redis.call('GET', nxt) or ARGV[12])
  redis.call('SET', blk, '1', 'PX', d)
  redis.call('SET', nxt, math.min(d * 2, tonumber(ARGV[13])), 'PX', 600000)
  return {'forbidden'}
end
local last, maxr = tonumber(ARGV[8]), tonumber(ARGV[14])
local seq = tonumber(redis.call('HGET', C, 's:'..conn) or '0')
local bseq = tonumber(redis.call('HGET', C, 'b:'..conn) or '0')
if last > seq then return {'gap', 'ahead'} end
local entries = {}
if bseq > last then
  local q = prefix..'q:'..conn
  entries = redis.call('XRANGE', q, '('..last..'-0', '+', 'COUNT', maxr + 1)
  if #entries == 0 then return {'gap', 'lost'} end
  if #entries > maxr then return {'gap', 'trimmed'} end
  local info = redis.call('XINFO', 'STREAM', q)
  for i = 1, #info, 2 do
    if info[i] == 'max-deleted-entry-id' then
      local md = tonumber(string.match(info[i + 1], '^(%d+)'))
      if md > last then return {'gap', 'trimmed'} end
    end
  end
  if entries[#entries][1] ~= bseq..'-0' then return {'gap', 'lost'} end
end
local old = redis.call('HGET', O, conn)
if st == 'absent' then redis.call('ZADD', H, now + tonumber(ARGV[10]), hub) end
redis.call('HSET', O, conn, hub)
local epoch = redis.call('HINCRBY', C, 'e:'..conn, 1)
redis.call('HSET', C, 'h:'..conn, ARGV[6])
local nk = prefix..'nk:'..conn
local nacks = redis.call('LRANGE', nk, 0, -1)
redis.call('DEL', nk)
touch(tonumber(ARGV[9]))
redis.call(pub, ch, '{"k":"t","c":'..cjson.encode(conn)..',"h":'..cjson.encode(hub)
  ..',"o":'..cjson.encode(old)..',"e":'..epoch..'}')
local last_id = tonumber(redis.call('HGET', C, 'i:'..conn) or '0')
return {'ok', epoch, last_id, nacks, redis.call('HVALS', M), entries}
"""

# ARGV: pub, channel, hub ('' = whoever owns it: REST and force-disconnect), conn, reason, prefix
LEAVE = _PRELUDE + r"""
local owner = redis.call('HGET', O, ARGV[4])
if not owner then return {'nomember'} end
if ARGV[3] ~= '' then
  if lease(ARGV[3]) ~= 'live' then return {'fenced'} end
  if owner ~= ARGV[3] then return {'notowner'} end
end
destroy(ARGV[1], ARGV[2], ARGV[6], ARGV[4], owner, ARGV[5])
return {'ok'}
"""

# ARGV: hub, conn, signal_id, nack_json, keep, ttl, prefix
NACK = _PRELUDE + r"""
if lease(ARGV[1]) ~= 'live' then return {'fenced'} end
if redis.call('HGET', O, ARGV[2]) ~= ARGV[1] then return {'notowner'} end
redis.call('HSET', C, 'i:'..ARGV[2], ARGV[3])
local nk = ARGV[7]..'nk:'..ARGV[2]
redis.call('LPUSH', nk, ARGV[4])
redis.call('LTRIM', nk, 0, tonumber(ARGV[5]) - 1)
redis.call('PEXPIRE', nk, tonumber(ARGV[6]))
return {'ok'}
"""

# ARGV: hub, lease, ttl
HEARTBEAT = _PRELUDE + r"""
local st = lease(ARGV[1])
if st ~= 'live' then return {st} end
redis.call('ZADD', H, now + tonumber(ARGV[2]), ARGV[1])
touch(tonumber(ARGV[3]))
return {'ok'}
"""

# ARGV: pub, channel, dead_hub, grace_ms, prefix
SWEEP = _PRELUDE + r"""
local s = redis.call('ZSCORE', H, ARGV[3])
if not s or tonumber(s) < 0 then return {'ok', 0} end
local due = tonumber(s) + tonumber(ARGV[4])
if now < due then return {'wait', due - now} end
local owners = redis.call('HGETALL', O)
local n = 0
for i = 1, #owners, 2 do
  if owners[i + 1] == ARGV[3] then
    destroy(ARGV[1], ARGV[2], ARGV[5], owners[i], ARGV[3], 'networkDisconnected')
    n = n + 1
  end
end
redis.call('ZADD', H, -1, ARGV[3])
return {'ok', n}
"""

# The hub registry (one key, KEYS[1]). ARGV: hub, lease_ms, mode ('register' | 'renew').
# A lease that has lapsed is never renewed: the hub is fenced for good and must start again as a new hub.
HUB_LEASE = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if ARGV[3] == 'register' then
  if s then return {'exists'} end
elseif not s or tonumber(s) < now then
  return {'fenced'}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return {'ok'}
"""

# KEYS[1] = the hub registry. The hubs whose lease has lapsed (swept ones included): the sweep's work.
DEAD_HUBS = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '('..now)
"""
