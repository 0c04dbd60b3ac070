"""The Redis scripts: acquire (all buckets or none), settle (reconcile/release, once), renew, refund.

Time is Redis `TIME` (µs), never a client clock, so replicas with skewed clocks agree. A rate bucket is
one string `"W r d"`: its theoretical arrival time is W + r/d µs (W whole µs, 0 <= r < d, T = a + b/d µs
per cell). Every number stays an integer below 2**53, so Lua's doubles compute it exactly: the Python
side bounds limits (< 2**31), token charges (<= 4e6) and debt (`cap`). A lease set is a ZSET of
reservation ids scored by expiry; expired leases are dropped before counting, so a dead replica's
leases free themselves.

Each script starts with `PRELUDE` (the clock). Tests swap that one line for a virtual clock read from
the last ARGV; production never registers that variant, so no production call can set the time.
"""

from __future__ import annotations

PRELUDE = """\
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local SLACK_MS = 1
"""

# (w, r) <- max(TAT, now), converting a TAT stored under another rate (d) up to the next whole µs.
_READ = """\
local function tat(key, d)
  local s = redis.call('GET', key)
  if s then
    local sw, sr, sd = string.match(s, '^(%d+) (%d+) (%d+)$')
    sw, sr = tonumber(sw), tonumber(sr)
    if sr > 0 and tonumber(sd) ~= d then sw, sr = sw + 1, 0 end
    if sw > now or (sw == now and sr > 0) then return sw, sr end
  end
  return now, 0
end
local function store(key, w, r, d)
  -- fmod(-k*d, d) is -0.0, which '%.0f' writes as "-0" and tat() cannot parse: store +0 instead.
  if r == 0 then r = 0 end
  if w > now or (w == now and r > 0) then
    local ttl = math.floor((w - now) / 1000) + SLACK_MS
    redis.call('SET', key, string.format('%.0f %.0f %d', w, r, d), 'PX', ttl)
  else
    redis.call('DEL', key)
  end
end
"""

# The epoch key holds "<id> <calm>": id is the Redis TIME (µs) when a script found the key missing --
# Redis was emptied (a restart without persistence, a failover to an empty replica, FLUSHALL) or is
# used for the first time -- and calm is until when lease sets refuse new leases (0: not at all). A
# replica that knew an older epoch (`known`) finds a missing key: Redis forgot every lease, so live
# leases must be put back by their replicas' heartbeats (RENEW) before anyone is admitted on top of
# them; one lease lifetime (`grace`) is enough, since a live lease is renewed within it.
_EPOCH = """\
local function epoch_of(key, known, grace)
  local s = redis.call('GET', key)
  if s then
    local id, calm = string.match(s, '^(%d+) (%d+)$')
    return id, tonumber(calm)
  end
  local id, calm = string.format('%.0f', now), 0
  if known ~= '' then calm = now + grace end
  redis.call('SET', key, id .. ' ' .. string.format('%.0f', calm))
  return id, calm
end
"""

# KEYS: rate buckets (nr), lease sets (nc), [pending reservation marker], the epoch key
# ARGV: nr, nc, rid, lease µs, pending ms, mode, then per rate: cost, a, b, d, tw, tr (tolerance
# burst*T = tw + tr/d µs), then per lease set: limit, then the epoch the caller knows ('' if none)
# and the grace µs (see _EPOCH). Mode: '0' take, '1' refuse (a demand no bucket could ever hold),
# '2' check only (a quota checked in the same call refused: take nothing).
# Returns {-1, epoch} when the caller knows another epoch (Redis was emptied since: it must put back
# what it knows first, then call again; nothing was taken), else {1 admitted | 2 would be admitted
# (mode 2) | 0 refused, per rate: whole µs and remainder of max(TAT, now) - now, per lease set: leases
# held and µs until the earliest expires (when full), the epoch} -- the state before this request.
# While the epoch is calming down, every lease set counts as full until `calm`.
ACQUIRE_BODY = """\
local nr, nc = tonumber(ARGV[1]), tonumber(ARGV[2])
local e = 6 + nr * 6 + nc
local known = ARGV[e + 1]
local epoch, calm = epoch_of(KEYS[#KEYS], known, tonumber(ARGV[e + 2]))
if known ~= '' and known ~= epoch then return {-1, epoch} end
local lease_us, pending_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local mode = ARGV[6]
local ok = mode ~= '1'
local out = {0}
local nw, nrem, nd = {}, {}, {}
for i = 1, nr do
  local j = 6 + (i - 1) * 6
  local c, a = tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2])
  local b, d = tonumber(ARGV[j + 3]), tonumber(ARGV[j + 4])
  local w, r = tat(KEYS[i], d)
  out[#out + 1] = w - now
  out[#out + 1] = r
  local x = r + c * b
  local rem = math.fmod(x, d)
  w = w + c * a + (x - rem) / d
  local dw, tw = w - now, tonumber(ARGV[j + 5])
  if dw > tw or (dw == tw and rem > tonumber(ARGV[j + 6])) then ok = false end
  nw[i], nrem[i], nd[i] = w, rem, d
end
local nowtext = string.format('%.0f', now)
for i = 1, nc do
  local key = KEYS[nr + i]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', nowtext)
  local held = redis.call('ZCARD', key)
  local first = 0
  if calm > now then
    ok = false
    held, first = tonumber(ARGV[6 + nr * 6 + i]), calm - now
  elseif held >= tonumber(ARGV[6 + nr * 6 + i]) then
    ok = false
    first = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]) - now
  end
  out[#out + 1] = held
  out[#out + 1] = first
end
if ok and mode == '2' then
  out[1] = 2
elseif ok then
  for i = 1, nr do
    if nw[i] > now or nrem[i] > 0 then store(KEYS[i], nw[i], nrem[i], nd[i]) end  -- never below now
  end
  local expiry = string.format('%.0f', now + lease_us)
  for i = 1, nc do
    redis.call('ZADD', KEYS[nr + i], expiry, ARGV[3])
    redis.call('PEXPIRE', KEYS[nr + i], math.floor(lease_us / 1000) + SLACK_MS)
  end
  if #KEYS == nr + nc + 2 then redis.call('SET', KEYS[nr + nc + 1], '1', 'PX', pending_ms) end
  out[1] = 1
end
out[#out + 1] = epoch
return out
"""

# KEYS: token rate buckets (nt), lease sets (nc), [pending reservation marker]
# ARGV: nt, nc, rid, delta (actual - reserved tokens), then per token bucket: a, b, d, cap µs.
# The marker is deleted by the first settlement only, so tokens are reconciled once; ZREM is
# idempotent by itself. Returns the number of things freed (0: already settled).
SETTLE_BODY = """\
local nt, nc = tonumber(ARGV[1]), tonumber(ARGV[2])
local delta = tonumber(ARGV[4])
local freed = 0
for i = 1, nc do freed = freed + redis.call('ZREM', KEYS[nt + i], ARGV[3]) end
local marker = KEYS[nt + nc + 1]
if marker and redis.call('DEL', marker) == 1 then
  freed = freed + 1
  for i = 1, nt do
    if delta == 0 then break end
    local j = 4 + (i - 1) * 4
    local a, b = tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2])
    local d, cap = tonumber(ARGV[j + 3]), tonumber(ARGV[j + 4])
    local w, r = tat(KEYS[i], d)
    if delta > 0 then
      if delta * a > cap then
        w, r = now + cap, 0
      else
        local x = r + delta * b
        r = math.fmod(x, d)
        w = w + delta * a + (x - r) / d
        if w - now > cap or (w - now == cap and r > 0) then w, r = now + cap, 0 end
      end
    else
      local x = r + delta * b
      local rem = math.fmod(x, d)
      if rem < 0 then rem = rem + d end
      w = w + delta * a + (x - rem) / d
      r = rem
    end
    store(KEYS[i], w, r, d)
  end
end
return freed
"""

# KEYS: lease sets (nc), [pending marker], the epoch key; ARGV: nc, rid, lease µs, pending ms, the
# epoch the caller knows, grace µs. Extends live leases only: a lease that already expired may have
# been given to someone else -- except while the epoch calms down (Redis was emptied: this lease is
# live, its replica says so, and Redis forgot it), when a missing lease and marker are put back.
# Returns {1 all renewed | 0 one had expired, the epoch}.
RENEW_BODY = """\
local nc = tonumber(ARGV[1])
local lease_us = tonumber(ARGV[3])
local epoch, calm = epoch_of(KEYS[#KEYS], ARGV[5], tonumber(ARGV[6]))
local back = calm > now
local renewed = 1
for i = 1, nc do
  local score = redis.call('ZSCORE', KEYS[i], ARGV[2])
  if (score and tonumber(score) > now) or (back and not score) then
    redis.call('ZADD', KEYS[i], string.format('%.0f', now + lease_us), ARGV[2])
    redis.call('PEXPIRE', KEYS[i], math.floor(lease_us / 1000) + SLACK_MS)
  else
    redis.call('ZREM', KEYS[i], ARGV[2])
    renewed = 0
  end
end
if #KEYS == nc + 2 and redis.call('PEXPIRE', KEYS[nc + 1], tonumber(ARGV[4])) == 0 then
  if back then redis.call('SET', KEYS[nc + 1], '1', 'PX', tonumber(ARGV[4])) else renewed = 0 end
end
return {renewed, epoch}
"""

# KEYS: rate buckets; ARGV: per bucket the µs from now to the TAT this replica last saw it at, and d.
# Puts back what an emptied Redis forgot: a bucket's TAT becomes at least the one a replica saw (a
# lower bound of the true one: TATs only grow, but for refunds), never lower than it is.
RESTORE_BODY = """\
for i, key in ipairs(KEYS) do
  local ahead, d = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local w, r = tat(key, d)
  if now + ahead > w then store(key, now + ahead, 0, d) end
end
return 1
"""

# KEYS: rate buckets; ARGV: per bucket cells, a, b, d, cap µs. Charges what a replica's local
# fallback admitted while Redis could not answer, as if Redis had admitted it (the debt capped like
# a settlement's), so the shared buckets do not hand out the outage's refill a second time.
CHARGE_BODY = """\
for i, key in ipairs(KEYS) do
  local j = (i - 1) * 5
  local c, a, b = tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2]), tonumber(ARGV[j + 3])
  local d, cap = tonumber(ARGV[j + 4]), tonumber(ARGV[j + 5])
  local w, r = tat(key, d)
  if c * a > cap then
    w, r = now + cap, 0
  else
    local x = r + c * b
    r = math.fmod(x, d)
    w = w + c * a + (x - r) / d
    if w - now > cap or (w - now == cap and r > 0) then w, r = now + cap, 0 end
  end
  store(key, w, r, d)
end
return 1
"""


# KEYS: request rate buckets (rps/rpm) of a cancelled admission; ARGV: per bucket a, b, d.
# Gives back the one cell the admission took (TAT - T, never below now), so an admission undone
# because a sibling was refused (all-or-nothing across several demands) leaves no trace.
REFUND_BODY = """\
for i, key in ipairs(KEYS) do
  local j = (i - 1) * 3
  local a, b, d = tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2]), tonumber(ARGV[j + 3])
  local w, r = tat(key, d)
  local x = r - b
  local rem = math.fmod(x, d)
  if rem < 0 then rem = rem + d end
  store(key, w - a + (x - rem) / d, rem, d)
end
return 1
"""


# Token quotas (gateway/quotas.py): one counter per subject and period holding used + reserved
# tokens. A missing counter reads as the database's figure (seed) and is created by the first charge,
# so a check writes nothing. No clock: periods are in the key names.
# KEYS: counters; ARGV: tokens, then per counter: limit, seed, ttl ms (0: none).
QUOTA_FUNCTIONS = """\
local function quota_check(KEYS, ARGV)
  local tokens = tonumber(ARGV[1])
  for i, key in ipairs(KEYS) do
    local v = tonumber(redis.call('GET', key) or ARGV[3 * i])
    if v + tokens > tonumber(ARGV[3 * i - 1]) then return i, v end
  end
  return 0, 0
end
local function quota_take(KEYS, ARGV)
  local tokens = tonumber(ARGV[1])
  for i, key in ipairs(KEYS) do
    if redis.call('EXISTS', key) == 1 then
      redis.call('INCRBY', key, tokens)
    else
      local v, ttl = tonumber(ARGV[3 * i]) + tokens, tonumber(ARGV[3 * i + 1])
      if ttl > 0 then redis.call('SET', key, v, 'PX', ttl) else redis.call('SET', key, v) end
    end
  end
end
local function quota_settle(KEYS, delta)
  for _, key in ipairs(KEYS) do
    if redis.call('EXISTS', key) == 1 then redis.call('INCRBY', key, delta) end
  end
end
"""

# Reserve against every counter or none. Returns {1} or {0, index (1-based), used}.
QUOTA_RESERVE = (
    QUOTA_FUNCTIONS
    + """\
local refused, used = quota_check(KEYS, ARGV)
if refused > 0 then return {0, refused, used} end
quota_take(KEYS, ARGV)
return {1}
"""
)
# KEYS: counters; ARGV: delta (actual - reserved; may be negative).
QUOTA_SETTLE = QUOTA_FUNCTIONS + "quota_settle(KEYS, ARGV[1])\nreturn 1\n"

# The limits and the quotas of one request in ONE call (see gateway/shared_admission.py): the
# quotas are checked first; if one refuses, the limits are only checked (mode 2), so nothing is taken
# anywhere; otherwise the limits decide and, when they admit, the quotas are charged.
# KEYS: limiter keys (nk), quota counters. ARGV: nk, na, the limiter's acquire ARGV (na), then the
# quotas' reserve ARGV. Returns the limiter's reply followed by the refusing counter (1-based, 0: none)
# and its usage.
_ADMIT_BODY = """\
local nk, na = tonumber(ARGV[1]), tonumber(ARGV[2])
local lk, la, qk, qa = {}, {}, {}, {}
for i = 1, #KEYS do if i <= nk then lk[i] = KEYS[i] else qk[i - nk] = KEYS[i] end end
for i = 3, #ARGV do if i <= na + 2 then la[i - 2] = ARGV[i] else qa[i - na - 2] = ARGV[i] end end
local refused, used = quota_check(qk, qa)
if refused > 0 and la[6] == '0' then la[6] = '2' end
local out = limiter_acquire(lk, la)
if out[1] == 1 then quota_take(qk, qa) end
out[#out + 1] = refused
out[#out + 1] = used
return out
"""
# KEYS: limiter keys (nk), quota counters. ARGV: nk, na, the limiter's settle ARGV (na), quota delta.
_SETTLE_BOTH_BODY = """\
local nk, na = tonumber(ARGV[1]), tonumber(ARGV[2])
local lk, la, qk = {}, {}, {}
for i = 1, #KEYS do if i <= nk then lk[i] = KEYS[i] else qk[i - nk] = KEYS[i] end end
for i = 1, na do la[i] = ARGV[i + 2] end
local freed = limiter_settle(lk, la)
quota_settle(qk, ARGV[na + 3])
return freed
"""


def _function(name: str, body: str) -> str:
    """A script body as a local Lua function of (KEYS, ARGV), so two bodies can share one call."""
    return f"local function {name}(KEYS, ARGV)\n{body}end\n"


def build(prelude: str) -> tuple[str, str, str, str, str, str]:
    """(acquire, settle, renew, refund, restore, charge) sources around a clock prelude."""
    return (
        prelude + _READ + _EPOCH + ACQUIRE_BODY,
        prelude + _READ + SETTLE_BODY,
        prelude + _EPOCH + RENEW_BODY,
        prelude + _READ + REFUND_BODY,
        prelude + _READ + RESTORE_BODY,
        prelude + _READ + CHARGE_BODY,
    )


def build_with_quotas(prelude: str) -> tuple[str, str]:
    """(admit, settle) sources doing the limiter's and the quotas' work in one call each."""
    head = prelude + _READ + QUOTA_FUNCTIONS
    return (
        head + _EPOCH + _function("limiter_acquire", ACQUIRE_BODY) + _ADMIT_BODY,
        head + _function("limiter_settle", SETTLE_BODY) + _SETTLE_BOTH_BODY,
    )


ACQUIRE, SETTLE, RENEW, REFUND, RESTORE, CHARGE = build(PRELUDE)
ADMIT_WITH_QUOTAS, SETTLE_WITH_QUOTAS = build_with_quotas(PRELUDE)
