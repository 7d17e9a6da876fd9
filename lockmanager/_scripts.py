"""The Lua scripts that hold the whole lease protocol.

Every script takes one key, ``KEYS[1]``: the lock's prefix, which carries a
Redis Cluster hash tag (``fluxion:{ventas.duckdb:1a2b}``), so that all the keys
it derives from it live in one slot. ``ARGV[1]`` is always the history length.
Every time is read from the Redis server clock (``TIME``), never a client's.

Keys under the prefix ``P``:

=================  ========  ===================================================
``P:exp``          ZSET      holder token -> lease expiry (ms)
``P:h:<token>``    HASH      holder: mode, prio, fence, since, ttl, name, meta...
``P:queue``        ZSET      waiter token -> order (enqueue ms + class penalty)
``P:hb``           ZSET      waiter token -> heartbeat deadline (ms)
``P:w:<token>``    HASH      waiter: mode, prio, since, ttl, name, meta
``P:m:<token>``    LIST      mailbox: ``granted:<fence>``, ``contended``, ``lost``
``P:fence``        STRING    fencing counter; only grows
``P:seq``          STRING    arrival counter
``P:order``        HASH      last queue score per class (FIFO tie-break)
``P:hist``         STREAM    grants, releases, expiries, forced releases
``P:stats``        HASH      counters since the keys were created
=================  ========  ===================================================

Modes are stored as ``s`` (shared) and ``x`` (exclusive).
"""

from __future__ import annotations

# Result codes, named once for both shells.
GRANTED = 1
QUEUED = 2
OK = 1
LOST = 0
MAX_HOLD = 3
RELEASED = 1
NOT_HELD = 0

_PRELUDE = r"""
local P = KEYS[1]
local K_EXP, K_Q, K_HB = P .. ':exp', P .. ':queue', P .. ':hb'
local K_FENCE, K_SEQ, K_ORDER = P .. ':fence', P .. ':seq', P .. ':order'
local K_HIST, K_STATS = P .. ':hist', P .. ':stats'
local HIST_LEN = tonumber(ARGV[1])
local function hkey(t) return P .. ':h:' .. t end
local function wkey(t) return P .. ':w:' .. t end
local function mbox(t) return P .. ':m:' .. t end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function event(kind, token, fields)
  local args = {K_HIST, 'MAXLEN', '~', HIST_LEN, '*',
                'event', kind, 'token', token}
  for i = 1, #fields, 2 do
    args[#args + 1] = fields[i]
    args[#args + 1] = tostring(fields[i + 1] or '')
  end
  redis.call('XADD', unpack(args))
  redis.call('HINCRBY', K_STATS, kind, 1)
end

local function notify(t, msg)
  local m = mbox(t)
  redis.call('RPUSH', m, msg)
  redis.call('LTRIM', m, -16, -1)
  redis.call('PEXPIRE', m, 300000)
end

local function drop_holder(t, kind, now, extra)
  local h = redis.call('HMGET', hkey(t), 'mode', 'prio', 'fence', 'since',
                       'name', 'wait_ms')
  redis.call('ZREM', K_EXP, t)
  redis.call('DEL', hkey(t))
  local f = {'mode', h[1], 'prio', h[2], 'fence', h[3], 'name', h[5],
             'wait_ms', h[6], 'hold_ms', now - tonumber(h[4] or now)}
  for i = 1, #extra do f[#f + 1] = extra[i] end
  event(kind, t, f)
end

local function drop_waiter(t)
  redis.call('ZREM', K_Q, t)
  redis.call('ZREM', K_HB, t)
  redis.call('DEL', wkey(t))
end

local function purge(now)
  for _, t in ipairs(redis.call('ZRANGEBYSCORE', K_EXP, '-inf', now)) do
    drop_holder(t, 'expired', now, {})
    notify(t, 'lost')
  end
  for _, t in ipairs(redis.call('ZRANGEBYSCORE', K_HB, '-inf', now)) do
    local name = redis.call('HGET', wkey(t), 'name')
    drop_waiter(t)
    redis.call('DEL', mbox(t))
    event('waiter_dropped', t, {'name', name})
  end
end

local function holders_state()
  local toks = redis.call('ZRANGE', K_EXP, 0, -1)
  local x = false
  for _, t in ipairs(toks) do
    if redis.call('HGET', hkey(t), 'mode') == 'x' then x = true end
  end
  return #toks, x
end

-- After a batch turn, the other batch waiters start ageing again from now
-- (in their order): at most one batch turn overtakes interactive waiters
-- per ageing period, however many ETL workers queue. The backend then
-- waits for one chunk, not one per worker, and the ETL still gets a turn
-- every period under a continuous stream of interactive work.
local function restart_aging(now)
  local step = 0
  for _, t in ipairs(redis.call('ZRANGE', K_Q, 0, -1)) do
    local w = redis.call('HMGET', wkey(t), 'prio', 'penalty')
    if w[1] == 'batch' and w[2] then
      step = step + 1
      local score = string.format('%.17g', now + tonumber(w[2]) + step / 1000)
      redis.call('ZADD', K_Q, score, t)
      redis.call('HSET', K_ORDER, 'batch', score)
    end
  end
end

local function grant(t, now)
  local w = redis.call('HMGET', wkey(t), 'mode', 'prio', 'since', 'ttl',
                       'name', 'meta')
  local fence = ''
  if w[1] == 'x' then fence = redis.call('INCR', K_FENCE) end
  local ttl = tonumber(w[4])
  local waited = now - tonumber(w[3])
  redis.call('HSET', hkey(t), 'mode', w[1], 'prio', w[2], 'since', now,
             'ttl', ttl, 'fence', fence, 'name', w[5], 'meta', w[6],
             'wait_ms', waited, 'renewals', 0)
  redis.call('ZADD', K_EXP, now + ttl, t)
  drop_waiter(t)
  notify(t, 'granted:' .. fence)
  event('grant', t, {'mode', w[1], 'prio', w[2], 'fence', fence,
                     'name', w[5], 'wait_ms', waited})
  if w[2] == 'batch' then restart_aging(now) end
end

-- Grant from the head of the queue: one writer alone, or every reader up
-- to the first writer. A queued writer therefore stops later readers.
local function pump(now)
  purge(now)
  local n, x = holders_state()
  local granted = {}
  for _, t in ipairs(redis.call('ZRANGE', K_Q, 0, 63)) do
    local mode = redis.call('HGET', wkey(t), 'mode')
    if not mode then
      drop_waiter(t)
    elseif mode == 'x' then
      if n == 0 then
        grant(t, now)
        granted[#granted + 1] = t
      end
      break
    else
      if x then break end
      grant(t, now)
      granted[#granted + 1] = t
      n = n + 1
    end
  end
  if #granted > 0 and redis.call('ZCARD', K_Q) > 0 then
    for _, t in ipairs(granted) do notify(t, 'contended') end
  end
end

local function holding(t, now)
  local h = redis.call('HMGET', hkey(t), 'fence', 'mode')
  if not h[2] then return nil end
  local exp = redis.call('ZSCORE', K_EXP, t)
  return {h[1], tonumber(exp) - now}
end
"""

# ACQUIRE: enqueue (first call) or poll (later calls), then grant what can be.
# ARGV: hist_len, token, mode (s|x), prio, ttl_ms, heartbeat_ms, penalty_ms,
#       name, meta (opaque JSON kept for operators)
# Returns {GRANTED, fence, ttl_left_ms} or
#         {QUEUED, position, ms until the first holder's lease expires or -1}
ACQUIRE = (
    _PRELUDE
    + r"""
local token, mode, prio = ARGV[2], ARGV[3], ARGV[4]
local ttl, hb, penalty = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local now = now_ms()
purge(now)
local held = holding(token, now)
if held then return {1, held[1], held[2]} end

local new = redis.call('EXISTS', wkey(token)) == 0
if new then
  -- Order: arrival ms plus the class penalty, nudged past the last
  -- arrival of the same class so that ties stay FIFO. Scores travel as
  -- '%.17g' strings: Lua would print a number with 14 digits only, which
  -- drops the fraction of a 13-digit millisecond count.
  redis.call('INCR', K_SEQ)
  local score = now + penalty
  local last = tonumber(redis.call('HGET', K_ORDER, prio) or '0')
  if score <= last then score = last + 0.001 end
  local text = string.format('%.17g', score)
  redis.call('HSET', K_ORDER, prio, text)
  redis.call('HSET', wkey(token), 'mode', mode, 'prio', prio, 'since', now,
             'ttl', ttl, 'name', ARGV[8], 'meta', ARGV[9], 'penalty', penalty)
  redis.call('ZADD', K_Q, text, token)
end
redis.call('ZADD', K_HB, now + hb, token)
pump(now)

held = holding(token, now)
if held then return {1, held[1], held[2]} end
if new then
  for _, t in ipairs(redis.call('ZRANGE', K_EXP, 0, -1)) do
    notify(t, 'contended')
  end
end
local first = redis.call('ZRANGE', K_EXP, 0, 0, 'WITHSCORES')
local wake = -1
if first[2] then wake = tonumber(first[2]) - now end
return {2, redis.call('ZRANK', K_Q, token), wake}
"""
)

# CANCEL: a waiter gives up. If a grant raced the give-up, the lease is
# released again, so the next waiter is not held up.
# ARGV: hist_len, token.  Returns 1 if a raced grant was undone, else 0.
CANCEL = (
    _PRELUDE
    + r"""
local token = ARGV[2]
local now = now_ms()
local undone = 0
if redis.call('EXISTS', hkey(token)) == 1 then
  drop_holder(token, 'released', now, {'why', 'gave_up'})
  undone = 1
elseif redis.call('EXISTS', wkey(token)) == 1 then
  local name = redis.call('HGET', wkey(token), 'name')
  drop_waiter(token)
  event('gave_up', token, {'name', name})
end
redis.call('DEL', mbox(token))
pump(now)
return undone
"""
)

# RENEW: extend a held lease by its TTL, unless its class's max-hold budget
# is spent. ARGV: hist_len, token, ttl_ms, max_hold_ms
# Returns {OK, ttl_left_ms, waiters}, {LOST}, or {MAX_HOLD, ttl_left_ms, waiters}
RENEW = (
    _PRELUDE
    + r"""
local token, ttl, max_hold = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
pump(now)
local since = redis.call('HGET', hkey(token), 'since')
if not since then return {0} end
local waiters = redis.call('ZCARD', K_Q)
if now - tonumber(since) + ttl > max_hold then
  return {3, tonumber(redis.call('ZSCORE', K_EXP, token)) - now, waiters}
end
redis.call('ZADD', K_EXP, now + ttl, token)
redis.call('HINCRBY', hkey(token), 'renewals', 1)
return {1, ttl, waiters}
"""
)

# RELEASE: owner-only, by token; then hand the file to the next waiters.
# ARGV: hist_len, token.  Returns {RELEASED, hold_ms} or {NOT_HELD}
RELEASE = (
    _PRELUDE
    + r"""
local token = ARGV[2]
local now = now_ms()
local since = redis.call('HGET', hkey(token), 'since')
redis.call('DEL', mbox(token))  -- even after an expiry left 'lost' in it
if not since then
  pump(now)
  return {0}
end
drop_holder(token, 'released', now, {})
pump(now)
return {1, now - tonumber(since)}
"""
)

# STATUS: is this token still a holder, and does anyone wait?
# ARGV: hist_len, token.
# Returns {1, fence, ttl_left_ms, waiters, mode, prio} or {0, '', 0, waiters}
STATUS = (
    _PRELUDE
    + r"""
local token = ARGV[2]
local now = now_ms()
pump(now)
local waiters = redis.call('ZCARD', K_Q)
local held = holding(token, now)
if not held then return {0, '', 0, waiters} end
local h = redis.call('HMGET', hkey(token), 'mode', 'prio')
return {1, held[1], held[2], waiters, h[1], h[2]}
"""
)

# RESEED: the file recorded fence `floor` (e.g. after Redis lost its keys);
# raise the counter above it and give the new fence to this writer.
# ARGV: hist_len, token, floor.  Returns {OK, new_fence} or {LOST}
RESEED = (
    _PRELUDE
    + r"""
local token, floor = ARGV[2], tonumber(ARGV[3])
local now = now_ms()
purge(now)
if redis.call('HGET', hkey(token), 'mode') ~= 'x' then return {0} end
local cur = tonumber(redis.call('GET', K_FENCE) or '0')
local fence = math.max(cur, floor) + 1
redis.call('SET', K_FENCE, fence)
redis.call('HSET', hkey(token), 'fence', fence)
event('reseed', token, {'fence', fence, 'floor', floor})
return {1, fence}
"""
)

# FORCE_RELEASE: an operator takes the lease from its holders (or from one
# token), advances the fence so the old writer cannot commit, and wakes the
# next waiter. ARGV: hist_len, who, reason, token or ''.
# Returns {released_count, new_fence}
FORCE_RELEASE = (
    _PRELUDE
    + r"""
local who, reason, only = ARGV[2], ARGV[3], ARGV[4]
local now = now_ms()
purge(now)
local n = 0
for _, t in ipairs(redis.call('ZRANGE', K_EXP, 0, -1)) do
  if only == '' or only == t then
    drop_holder(t, 'forced', now, {'by', who, 'reason', reason})
    notify(t, 'lost')
    n = n + 1
  end
end
local fence = redis.call('INCR', K_FENCE)
if n == 0 then
  event('forced', '', {'by', who, 'reason', reason, 'released', 0})
end
pump(now)
return {n, fence}
"""
)

# SNAPSHOT: read-only view for operators (no purge: looking changes nothing).
# Returns {now_ms, fence, holders, waiters, stats}; holders and waiters are
# lists of flat HGETALL arrays with 'token' and 'exp' or 'hb' added.
SNAPSHOT = r"""
local P = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local holders, waiters = {}, {}
local exp = redis.call('ZRANGE', P .. ':exp', 0, -1, 'WITHSCORES')
for i = 1, #exp, 2 do
  local h = redis.call('HGETALL', P .. ':h:' .. exp[i])
  h[#h + 1] = 'token'; h[#h + 1] = exp[i]
  h[#h + 1] = 'exp'; h[#h + 1] = exp[i + 1]
  holders[#holders + 1] = h
end
for _, tok in ipairs(redis.call('ZRANGE', P .. ':queue', 0, -1)) do
  local w = redis.call('HGETALL', P .. ':w:' .. tok)
  w[#w + 1] = 'token'; w[#w + 1] = tok
  w[#w + 1] = 'hb'; w[#w + 1] = redis.call('ZSCORE', P .. ':hb', tok) or ''
  waiters[#waiters + 1] = w
end
local fence = redis.call('GET', P .. ':fence') or '0'
return {now, fence, holders, waiters, redis.call('HGETALL', P .. ':stats')}
"""

ALL = {
    "acquire": ACQUIRE,
    "cancel": CANCEL,
    "renew": RENEW,
    "release": RELEASE,
    "status": STATUS,
    "reseed": RESEED,
    "force_release": FORCE_RELEASE,
    "snapshot": SNAPSHOT,
}
