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

# KEYS: rate buckets (nr), lease sets (nc), [pending reservation marker]
# ARGV: nr, nc, rid, lease µs, pending ms, mode, then per rate: cost, a, b, d, tw, tr (tolerance
# burst*T = tw + tr/d µs), then per lease set: limit. Mode: '0' take, '1' refuse (a demand no bucket
# could ever hold), '2' check only (a quota checked in the same call refused: take nothing).
# Returns {1 admitted | 2 would be admitted (mode 2) | 0 refused, per rate: whole µs and remainder of
# max(TAT, now) - now, per lease set: leases held and µs until the earliest expires (when full)} --
# the state before this request.
ACQUIRE_BODY = """\
local nr, nc = tonumber(ARGV[1]), tonumber(ARGV[2])
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
  if held >= tonumber(ARGV[6 + nr * 6 + i]) then
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
  if KEYS[nr + nc + 1] then redis.call('SET', KEYS[nr + nc + 1], '1', 'PX', pending_ms) end
  out[1] = 1
end
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

# KEYS: lease sets (nc), [pending marker]; ARGV: nc, rid, lease µs, pending ms.
# Extends live leases only: a lease that already expired may have been given to someone else.
RENEW_BODY = """\
local nc = tonumber(ARGV[1])
local lease_us = tonumber(ARGV[3])
local renewed = 1
for i = 1, nc do
  local score = redis.call('ZSCORE', KEYS[i], ARGV[2])
  if score and tonumber(score) > now then
    redis.call('ZADD', KEYS[i], string.format('%.0f', now + lease_us), ARGV[2])
    redis.call('PEXPIRE', KEYS[i], math.floor(lease_us / 1000) + SLACK_MS)
  else
    redis.call('ZREM', KEYS[i], ARGV[2])
    renewed = 0
  end
end
local marker = KEYS[nc + 1]
if marker and redis.call('PEXPIRE', marker, tonumber(ARGV[4])) == 0 then renewed = 0 end
return renewed
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


def build(prelude: str) -> tuple[str, str, str, str]:
    """(acquire, settle, renew, refund) sources around a clock prelude."""
    return (
        prelude + _READ + ACQUIRE_BODY,
        prelude + _READ + SETTLE_BODY,
        prelude + RENEW_BODY,
        prelude + _READ + REFUND_BODY,
    )


def build_with_quotas(prelude: str) -> tuple[str, str]:
    """(admit, settle) sources doing the limiter's and the quotas' work in one call each."""
    head = prelude + _READ + QUOTA_FUNCTIONS
    return (
        head + _function("limiter_acquire", ACQUIRE_BODY) + _ADMIT_BODY,
        head + _function("limiter_settle", SETTLE_BODY) + _SETTLE_BOTH_BODY,
    )


ACQUIRE, SETTLE, RENEW, REFUND = build(PRELUDE)
ADMIT_WITH_QUOTAS, SETTLE_WITH_QUOTAS = build_with_quotas(PRELUDE)
