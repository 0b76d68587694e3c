"""The Lua scripts of the Redis subject queue (labeler/classifications/queue.py).

Each runs atomically in Redis, so choosing a subject, leasing it and counting its holders
cannot interleave between web workers. Key layout: the docstring of queue.py.
"""

# Shared by the scripts below: expire old leases, count holders, take a lease.
# KEYS[3] lease, KEYS[7] held, KEYS[8] votes.
LEASES = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function expire_leases(now)
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 500)) do
    redis.call('ZREM', KEYS[3], member)
    local sid = string.match(member, '^(%d+)|')
    if redis.call('HINCRBY', KEYS[7], sid, -1) <= 0 then redis.call('HDEL', KEYS[7], sid) end
  end
end
local function take_lease(sid, volunteer, until_ms)
  if redis.call('ZADD', KEYS[3], until_ms, sid .. '|' .. volunteer) == 1 then
    redis.call('HINCRBY', KEYS[7], sid, 1)
  end
end
"""

# KEYS: queue gold lease seen meta sync held votes skip.  ARGV: gold (0 no, 1 yes, 2 taper) random?
# top_few rand lease_ms sync_ms seen_ttl first_window max_scan alternates random_probe volunteer
# retire_after, taper: draw start floor half_life, then max_window, then the excluded ids. With
# taper, gold when draw < max(floor, start * 0.5 ^ (seen / half_life)) (selectors.gold_share),
# counted here: no second round trip for the volunteer's count.
#
# The walk down the queue reads windows that double from first_window to max_window (unpack()
# takes at most ~8000 values), so the usual case, a few seen subjects near the top, costs one
# small window. A volunteer who has seen the whole top would still re-read it on every call: the
# skip key remembers, per volunteer, a score above which every queued subject is in their seen
# set, valid while the queue's epoch (built_at and gen in meta) is the one it was taken in. Seen
# sets only grow and removals cannot break the claim; everything that adds a subject or raises a
# score bumps gen (TOUCH, RAISE_WATERMARK after a sync, SWAP), and reloading a seen set deletes the key.
# Returns {status, sync_due, chosen, alternates...}; status 1: queue not built, 2: seen set not loaded.
SELECT = (
    LEASES
    + """
if redis.call('EXISTS', KEYS[5]) == 0 then return {1, 0} end
if redis.call('EXISTS', KEYS[4]) == 0 then return {2, 0} end
redis.call('EXPIRE', KEYS[4], ARGV[7])
local now = now_ms()
expire_leases(now)
local sync = 0
if redis.call('SET', KEYS[6], '1', 'NX', 'PX', ARGV[6]) then sync = 1 end
local retire_after = tonumber(ARGV[13])
local excluded = {}
for i = 19, #ARGV do excluded[ARGV[i]] = true end
local function unseen(ids)
  if #ids == 0 then return {} end
  local flags = redis.call('SMISMEMBER', KEYS[4], unpack(ids))
  local out = {}
  for i, id in ipairs(ids) do
    if flags[i] == 0 and not excluded[id] then out[#out + 1] = id end
  end
  return out
end
-- Appends ids, in order, to free (fewer holders than the votes it still needs) or busy, until
-- free holds want; one HMGET for the holders, a vote count only for subjects someone holds.
local function by_room(ids, free, busy, want)
  if #ids == 0 then return end
  local held = redis.call('HMGET', KEYS[7], unpack(ids))
  for i, id in ipairs(ids) do
    if #free >= want then return end
    local holders = tonumber(held[i] or '0')
    local room = holders == 0
    if not room then room = holders < retire_after - tonumber(redis.call('HGET', KEYS[8], id) or '0') end
    if room then
      free[#free + 1] = id
    elseif #busy < want then
      busy[#busy + 1] = id
    end
  end
end
local function answer(pool)
  local pick = math.floor(tonumber(ARGV[4]) * #pool) + 1
  local out = {0, sync, pool[pick]}
  for i = 1, #pool do
    if i ~= pick and #out < 3 + tonumber(ARGV[10]) then out[#out + 1] = pool[i] end
  end
  take_lease(pool[pick], ARGV[12], now + tonumber(ARGV[5]))
  return out
end
local want_gold = ARGV[1] == '1'
if ARGV[1] == '2' then
  local seen = redis.call('SCARD', KEYS[4]) - 1  -- less the sentinel
  local share = math.max(tonumber(ARGV[16]), tonumber(ARGV[15]) * 0.5 ^ (seen / tonumber(ARGV[17])))
  want_gold = tonumber(ARGV[14]) < share
end
if want_gold then
  local gold = unseen(redis.call('SRANDMEMBER', KEYS[2], tonumber(ARGV[11])))
  if #gold > 0 then return answer(gold) end
end
if ARGV[2] == '1' then
  local free = {}
  local probe = unseen(redis.call('ZRANDMEMBER', KEYS[1], tonumber(ARGV[11])))
  by_room(probe, free, {}, #probe)
  if #free > 0 then return answer(free) end
end
local meta = redis.call('HMGET', KEYS[5], 'built_at', 'gen')
local epoch = tostring(meta[1]) .. '|' .. (meta[2] or '0')
local start = 0  -- rank where the walk begins: every subject above it is one this volunteer has seen
local skip = redis.call('GET', KEYS[9])
if skip then
  local skip_epoch, score = string.match(skip, '^(.*)|([^|]*)$')
  if skip_epoch == epoch then start = redis.call('ZCOUNT', KEYS[1], '(' .. score, '+inf') end
end
local want, limit = tonumber(ARGV[3]), tonumber(ARGV[9])
local window, max_window = tonumber(ARGV[8]), tonumber(ARGV[18])
local free, busy, walked, seen_run, in_run = {}, {}, 0, 0, true
while #free < want and walked < limit do
  local ids = redis.call('ZREVRANGE', KEYS[1], start + walked, start + walked + window - 1)
  if #ids == 0 then break end
  local flags = redis.call('SMISMEMBER', KEYS[4], unpack(ids))
  local open = {}
  for i, id in ipairs(ids) do
    if flags[i] == 1 then
      if in_run then seen_run = seen_run + 1 end
    else
      in_run = false
      if not excluded[id] then open[#open + 1] = id end
    end
  end
  by_room(open, free, busy, want)
  walked = walked + #ids
  window = math.min(2 * window, max_window)
end
if seen_run > 0 then
  local last = redis.call('ZREVRANGE', KEYS[1], start + seen_run - 1, start + seen_run - 1, 'WITHSCORES')
  redis.call('SET', KEYS[9], epoch .. '|' .. last[2], 'EX', ARGV[7])
end
if #free > 0 then return answer(free) end
if #busy > 0 then return answer(busy) end
return {0, sync}
"""
)

# KEYS: _ _ lease _ _ _ held votes.  ARGV: subject volunteer lease_ms
LEASE = LEASES + "take_lease(ARGV[1], ARGV[2], now_ms() + tonumber(ARGV[3])) return 1"

# KEYS: queue gold meta tmp_queue tmp_gold votes tmp_votes.  ARGV: version built_at watermark.
# A version older than the published one is refused; UNLINK frees the old set off the main thread.
SWAP = """
local current = tonumber(redis.call('HGET', KEYS[3], 'version') or '-1')
if current > tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[4], KEYS[5], KEYS[7])
  return 0
end
for _, pair in ipairs({{1, 4}, {2, 5}, {6, 7}}) do
  redis.call('UNLINK', KEYS[pair[1]])
  if redis.call('EXISTS', KEYS[pair[2]]) == 1 then
    redis.call('RENAME', KEYS[pair[2]], KEYS[pair[1]])
    redis.call('PERSIST', KEYS[pair[1]])
  end
end
redis.call('HSET', KEYS[3], 'version', ARGV[1], 'built_at', ARGV[2], 'watermark', ARGV[3])
redis.call('HINCRBY', KEYS[3], 'gen', 1)
return 1
"""

# KEYS: queue gold lease seen meta _ held votes.  ARGV: subject active(1/0) priority gold(1/0) votes
# volunteer answered(1/0).  A subject (re)added or raised bumps gen (see SELECT's skip key); the
# usual touch after a vote rewrites the same priority and leaves it alone.
TOUCH = (
    LEASES
    + """
if ARGV[7] == '1' then
  if redis.call('ZREM', KEYS[3], ARGV[1] .. '|' .. ARGV[6]) == 1 then
    if redis.call('HINCRBY', KEYS[7], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[7], ARGV[1]) end
  end
  if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('SADD', KEYS[4], ARGV[1]) end
end
if redis.call('EXISTS', KEYS[5]) == 0 then return 0 end
if ARGV[2] == '1' then
  local before = redis.call('ZSCORE', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  if not before or tonumber(ARGV[3]) > tonumber(before) then redis.call('HINCRBY', KEYS[5], 'gen', 1) end
  redis.call('HSET', KEYS[8], ARGV[1], ARGV[5])
  if ARGV[4] == '1' then redis.call('SADD', KEYS[2], ARGV[1]) else redis.call('SREM', KEYS[2], ARGV[1]) end
else
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[8], ARGV[1])
end
return 1
"""
)

# KEYS: meta.  ARGV: watermark.  The watermark only moves forward. Runs after a sync added subjects:
# bumps gen (see SELECT's skip key). A queue dropped meanwhile is not recreated as a bare meta.
RAISE_WATERMARK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'gen', 1)
local current = tonumber(redis.call('HGET', KEYS[1], 'watermark') or '0')
if tonumber(ARGV[1]) > current then redis.call('HSET', KEYS[1], 'watermark', ARGV[1]) end
return 1
"""

UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
