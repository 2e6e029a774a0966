"""Send limits shared by every worker: rates, quotas and leased semaphores.

One ``acquire`` checks every limit that applies to a send and either grants it (taking a rate
slot, a quota unit and a lease on each semaphore, atomically) or refuses it with the time to
come back. With ``HERALD_REDIS_URL`` the state lives in Redis and one Lua script does it in one
round trip, so the limits hold across processes and machines; without it (the embedded demo)
``MemoryThrottle`` runs the same rules in this process.

- **rate** (messages/s): GCRA. ``burst`` sends may go back to back, then one per 1/rate seconds,
  so any one-second window holds at most ``rate + burst`` sends (``rate + 1`` with the default).
  A slot up to ``inline_wait`` ahead is reserved and the worker sleeps until it; a caller further
  behind is given a place in a virtual queue (``:q`` key), so refused callers come back spread
  at the rate instead of all at once, and the broker is not busy-looped.
- **quota** (per minute / per day): fixed windows; a refused caller waits for the next window.
- **semaphore** (in-flight requests per provider, per campaign, globally): a sorted set of
  leases scored by expiry, so a lease held by a worker that died frees itself after ``lease_s``.
  A refused caller comes back after its place in a queue paced by the observed hold time.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol

import redis

from campaigns.resources import per_process, redis_client

log = logging.getLogger(__name__)

KEY_PREFIX = "herald:limit:"
# Before any lease was released, assume a request holds its slot this long (seconds).
DEFAULT_HOLD_S = 0.1


@dataclass(frozen=True)
class Rate:
    name: str
    per_s: float
    burst: int = 1


@dataclass(frozen=True)
class Quota:
    name: str
    limit: int
    window_s: int


@dataclass(frozen=True)
class Semaphore:
    name: str
    limit: int


@dataclass(frozen=True)
class Limits:
    """Every limit one send must respect."""

    rates: tuple[Rate, ...] = ()
    quotas: tuple[Quota, ...] = ()
    semaphores: tuple[Semaphore, ...] = ()
    # How far ahead a rate slot may be reserved and slept for, instead of refusing.
    inline_wait_s: float = 0.5
    # A lease frees itself this long after it was taken (the worker died or hung).
    lease_s: float = 30.0

    def __bool__(self) -> bool:
        return bool(self.rates or self.quotas or self.semaphores)


@dataclass(frozen=True)
class Decision:
    granted: bool
    # Granted: sleep this long, then send. Refused: come back after this long.
    wait: float = 0.0
    # Which limit refused (for logs), and the lease to release after the send.
    reason: str | None = None
    lease: str | None = None
    semaphores: tuple[str, ...] = field(default=())


class Throttle(Protocol):
    def acquire(self, limits: Limits, now: float | None = None) -> Decision: ...

    def release(self, decision: Decision, now: float | None = None) -> None: ...


def _grant(lease: str, wait: float, limits: Limits) -> Decision:
    return Decision(True, wait, lease=lease, semaphores=tuple(s.name for s in limits.semaphores))


# ---------------------------------------------------------------------------------------------
# Redis: one script, one round trip. Times are milliseconds (floats); `now` is Redis's own
# clock unless the caller passes one, so workers on machines with skewed clocks agree.

# Both scripts start here: ARGV[1] is the caller's time, or negative for Redis's own.
_NOW = """
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
"""

_ACQUIRE = _NOW + """
local inline = tonumber(ARGV[2])
local lease = ARGV[3]
local lease_ms = tonumber(ARGV[4])
local nr, nq, ns = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local default_hold = tonumber(ARGV[8])
local a, k = 9, 1

-- rates: KEYS[k] = tat; ARGV = interval, tolerance
local rate_wait, rate_i, tats = 0, 0, {}
for i = 1, nr do
  local interval, tol = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local tat = tonumber(redis.call('GET', KEYS[k]) or now)
  if tat < now then tat = now end
  tats[i] = tat
  local w = tat - tol - now
  if w > rate_wait then rate_wait, rate_i = w, i end
  a, k = a + 2, k + 1
end

-- quotas: KEYS[k] = counter prefix; ARGV = limit, window
local quota_wait, quota_i, qkeys = 0, 0, {}
for i = 1, nq do
  local limit, window = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local slot = math.floor(now / window)
  local key = KEYS[k] .. ':' .. slot
  qkeys[i] = {key, window}
  local used = tonumber(redis.call('GET', key) or 0)
  if used >= limit then
    local w = (slot + 1) * window - now
    if w > quota_wait then quota_wait, quota_i = w, i end
  end
  a, k = a + 2, k + 1
end
if quota_i > 0 then return {0, tostring(quota_wait), 'quota', quota_i} end

-- semaphores: KEYS[k] = lease set; ARGV = limit
local sem_wait, sem_i, skeys = 0, 0, {}
for i = 1, ns do
  local limit = tonumber(ARGV[a])
  local key = KEYS[k]
  skeys[i] = key
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= limit then
    local hold = tonumber(redis.call('GET', key .. ':hold') or default_hold)
    local q = tonumber(redis.call('GET', key .. ':q') or now)
    if q < now then q = now end
    q = q + hold / limit
    redis.call('SET', key .. ':q', tostring(q), 'PX', math.ceil(q - now) + 1000)
    local w = q - now
    if w > sem_wait then sem_wait, sem_i = w, i end
  end
  a, k = a + 1, k + 1
end
if sem_i > 0 then return {0, tostring(sem_wait), 'semaphore', sem_i} end

if rate_wait > inline then
  -- Refused: take a place in the binding rate's queue, behind every slot already promised.
  local interval = tonumber(ARGV[9 + (rate_i - 1) * 2])
  local qk = KEYS[rate_i] .. ':q'
  local q = tonumber(redis.call('GET', qk) or 0)
  if q < now + rate_wait then q = now + rate_wait end
  redis.call('SET', qk, tostring(q + interval), 'PX', math.ceil(q + interval - now) + 1000)
  return {0, tostring(q - now), 'rate', rate_i}
end

-- Granted: take the slot (at now + rate_wait), a quota unit and a lease on every semaphore.
local at = now + rate_wait
for i = 1, nr do
  local interval = tonumber(ARGV[9 + (i - 1) * 2])
  local tat = tats[i]
  if tat < at then tat = at end
  tat = tat + interval
  redis.call('SET', KEYS[i], tostring(tat), 'PX', math.ceil(tat - now) + 1000)
end
for i = 1, nq do
  local key, window = qkeys[i][1], qkeys[i][2]
  redis.call('INCR', key)
  redis.call('PEXPIRE', key, math.ceil(window) + 1000)
end
for i = 1, ns do
  redis.call('ZADD', skeys[i], at + lease_ms, lease)
  redis.call('PEXPIRE', skeys[i], math.ceil(rate_wait + lease_ms) + 1000)
  redis.call('HSET', skeys[i] .. ':taken', lease, tostring(at))
  redis.call('PEXPIRE', skeys[i] .. ':taken', math.ceil(rate_wait + lease_ms) + 1000)
end
return {1, tostring(rate_wait), '', 0}
"""

_RELEASE = _NOW + """
local lease = ARGV[2]
for i = 1, #KEYS do
  local taken = tonumber(redis.call('HGET', KEYS[i] .. ':taken', lease) or -1)
  if redis.call('ZREM', KEYS[i], lease) == 1 and taken >= 0 then
    -- Keep a moving average of how long a lease is held: it paces refused callers.
    local held = now - taken
    if held < 0 then held = 0 end
    local hold = tonumber(redis.call('GET', KEYS[i] .. ':hold') or held)
    redis.call('SET', KEYS[i] .. ':hold', tostring(0.8 * hold + 0.2 * held), 'EX', 3600)
  end
  redis.call('HDEL', KEYS[i] .. ':taken', lease)
end
return 1
"""


class RedisThrottle:
    def __init__(self, client: redis.Redis, prefix: str = KEY_PREFIX):
        self.client = client
        self.prefix = prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    def acquire(self, limits: Limits, now: float | None = None) -> Decision:
        keys: list[str] = []
        args: list = [-1 if now is None else now * 1000, limits.inline_wait_s * 1000, uuid.uuid4().hex,
                      limits.lease_s * 1000, len(limits.rates), len(limits.quotas),
                      len(limits.semaphores), DEFAULT_HOLD_S * 1000]
        for r in limits.rates:
            keys.append(self.prefix + "rate:" + r.name)
            interval = 1000 / r.per_s
            args += [interval, interval * (max(r.burst, 1) - 1)]
        for q in limits.quotas:
            keys.append(self.prefix + "quota:" + q.name)
            args += [q.limit, q.window_s * 1000]
        for s in limits.semaphores:
            keys.append(self.prefix + "sem:" + s.name)
            args.append(s.limit)
        granted, wait_ms, kind, index = self._acquire(keys=keys, args=args)
        wait = max(float(wait_ms) / 1000, 0.0)
        if granted:
            return _grant(args[2], wait, limits)
        return Decision(False, wait, reason=_reason(limits, kind.decode() if isinstance(kind, bytes) else kind, index))

    def release(self, decision: Decision, now: float | None = None) -> None:
        if decision.lease and decision.semaphores:
            self._release(keys=[self.prefix + "sem:" + n for n in decision.semaphores],
                          args=[-1 if now is None else now * 1000, decision.lease])


def _reason(limits: Limits, kind: str, index: int) -> str:
    group = {"rate": limits.rates, "quota": limits.quotas, "semaphore": limits.semaphores}[kind]
    return f"{kind} {group[int(index) - 1].name}"


# ---------------------------------------------------------------------------------------------
class MemoryThrottle:
    """The same rules in one process (the embedded demo): no Redis, nothing shared."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tat: dict[str, float] = {}
        self._queue: dict[str, float] = {}
        self._counts: dict[tuple[str, int], int] = {}
        self._leases: dict[str, dict[str, tuple[float, float]]] = {}  # name -> lease -> (taken, expiry)
        self._hold: dict[str, float] = {}

    def acquire(self, limits: Limits, now: float | None = None) -> Decision:
        now = time.time() if now is None else now
        with self._lock:
            rate_wait, binding = 0.0, None
            for r in limits.rates:
                tat = max(self._tat.get(r.name, now), now)
                w = tat - (max(r.burst, 1) - 1) / r.per_s - now
                if w > rate_wait:
                    rate_wait, binding = w, r
            for q in limits.quotas:
                slot = math.floor(now / q.window_s)
                if self._counts.get((q.name, slot), 0) >= q.limit:
                    return Decision(False, (slot + 1) * q.window_s - now, reason=f"quota {q.name}")
            sem_wait, sem_name = 0.0, None
            for s in limits.semaphores:
                leases = self._leases.setdefault(s.name, {})
                for lease in [k for k, (_, exp) in leases.items() if exp <= now]:
                    del leases[lease]
                if len(leases) >= s.limit:
                    q = max(self._queue.get("sem:" + s.name, now), now)
                    q += self._hold.get(s.name, DEFAULT_HOLD_S) / s.limit
                    self._queue["sem:" + s.name] = q
                    if q - now > sem_wait:
                        sem_wait, sem_name = q - now, s.name
            if sem_name is not None:
                return Decision(False, sem_wait, reason=f"semaphore {sem_name}")
            if binding is not None and rate_wait > limits.inline_wait_s:
                q = max(self._queue.get("rate:" + binding.name, 0.0), now + rate_wait)
                self._queue["rate:" + binding.name] = q + 1 / binding.per_s
                return Decision(False, q - now, reason=f"rate {binding.name}")
            at = now + rate_wait
            for r in limits.rates:
                self._tat[r.name] = max(self._tat.get(r.name, at), at) + 1 / r.per_s
            for q in limits.quotas:
                slot = (q.name, math.floor(now / q.window_s))
                self._counts[slot] = self._counts.get(slot, 0) + 1
            lease = uuid.uuid4().hex
            for s in limits.semaphores:
                self._leases[s.name][lease] = (at, at + limits.lease_s)
            return _grant(lease, rate_wait, limits)

    def release(self, decision: Decision, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            for name in decision.semaphores:
                taken = self._leases.get(name, {}).pop(decision.lease, None)
                if taken is not None:
                    held = max(now - taken[0], 0.0)
                    self._hold[name] = 0.8 * self._hold.get(name, held) + 0.2 * held


# ---------------------------------------------------------------------------------------------
def get_throttle() -> Throttle:
    """This process's throttle: Redis-backed when HERALD_REDIS_URL is set."""
    from campaigns.settings import get_settings

    return _throttle(get_settings().redis_url)


@per_process
def _throttle(url: str | None) -> Throttle:
    return RedisThrottle(redis_client(url)) if url else MemoryThrottle()


def limits_for(settings, account: str, campaign_id, concurrency: int | None) -> Limits:
    """The limits one send through ``account`` for ``campaign_id`` must respect."""
    _, acct = settings.provider(account)
    rates, quotas, sems = [], [], []
    if settings.global_rate_per_s:
        rates.append(Rate("global", settings.global_rate_per_s, settings.global_burst))
    if acct.rate_per_s:
        rates.append(Rate(f"provider:{account}", acct.rate_per_s, acct.burst))
    if acct.per_minute:
        quotas.append(Quota(f"provider:{account}:minute", acct.per_minute, 60))
    if acct.per_day:
        quotas.append(Quota(f"provider:{account}:day", acct.per_day, 86400))
    if settings.global_max_in_flight:
        sems.append(Semaphore("global", settings.global_max_in_flight))
    if acct.max_in_flight:
        sems.append(Semaphore(f"provider:{account}", acct.max_in_flight))
    if concurrency:
        sems.append(Semaphore(f"campaign:{campaign_id}", concurrency))
    # A lease outlives any live request (connect + read timeouts) before it frees itself.
    return Limits(tuple(rates), tuple(quotas), tuple(sems), inline_wait_s=settings.throttle_inline_wait_s,
                  lease_s=settings.throttle_inline_wait_s + 2 * acct.timeout_s + 1)


_UNLIMITED = Decision(True)


def acquire_for_send(account: str, campaign_id, concurrency: int | None) -> Decision:
    """Ask every limit for one send; no limits configured costs no round trip."""
    from campaigns.settings import get_settings

    limits = limits_for(get_settings(), account, campaign_id, concurrency)
    if not limits:
        return _UNLIMITED
    try:
        return get_throttle().acquire(limits)
    except redis.RedisError as exc:
        # Fail closed: limits may be contractual. The send comes back when Redis may be back.
        log.warning("limiter unreachable; send deferred", extra={"error": type(exc).__name__})
        return Decision(False, 1.0, reason="limiter unreachable")


def release(decision: Decision) -> None:
    if not decision.semaphores:
        return
    try:
        get_throttle().release(decision)
    except redis.RedisError:
        pass  # the lease frees itself after lease_s
