"""Per-account waits shared by every worker process, kept in Redis (in-process when embedded).

- cooldown: after a 429, no request goes to that account until its ``Retry-After`` has passed.
  Every send asks, so a process reuses each answer for ``SEEN_FOR_S``: a hold taken here counts
  at once, one taken by another process counts here within ``SEEN_FOR_S``.
- circuit breaker: credentials/permission/credit refusals open an account's circuit at once;
  5xx and connection failures open it after ``FAILURES_TO_OPEN`` within ``FAILURE_WINDOW_S``.
  While open (``OPEN_S``), routing sends through the route's next account; then it closes.
- no route: an account that has no rate for a destination region is skipped for that region.
"""

from __future__ import annotations

import logging
import threading
import time

import redis as redis_lib

from campaigns.resources import per_process, redis_client
from campaigns.settings import get_settings

FAILURES_TO_OPEN = 5
FAILURE_WINDOW_S = 30
OPEN_S = 30.0
NO_ROUTE_S = 600.0
PREFIX = "herald:acct"
UNREACHABLE_WAIT_S = 1.0
# How long an answer to "does this account cool down?" is reused: a Redis command costs a sending
# thread about as much CPU as the claim. At 200 sends/s per process 50 ms saves nine round trips
# in ten; at the bench's ~80 on a slow hour, three in five (py-spy, `herald bench --profile`).
SEEN_FOR_S = 0.05

log = logging.getLogger(__name__)


class _Memory:
    """The embedded stand-in for Redis: one process, expiring keys and counters."""

    def __init__(self) -> None:
        self.expiry: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()

    def hold(self, key: str, seconds: float) -> None:
        with self.lock:
            self.expiry[key] = max(self.expiry.get(key, 0.0), time.monotonic() + seconds)

    def remaining(self, keys: list[str]) -> list[float]:
        now = time.monotonic()
        with self.lock:
            return [max(self.expiry.get(k, 0.0) - now, 0.0) for k in keys]

    def incr(self, key: str, window: float) -> int:
        with self.lock:
            if self.remaining_unlocked(key) == 0:
                self.counts[key] = 0
                self.expiry[key] = time.monotonic() + window
            self.counts[key] = self.counts.get(key, 0) + 1
            return self.counts[key]

    def remaining_unlocked(self, key: str) -> float:
        return max(self.expiry.get(key, 0.0) - time.monotonic(), 0.0)

    def delete(self, key: str) -> None:
        with self.lock:
            self.expiry.pop(key, None)
            self.counts.pop(key, None)


class _Redis:
    """Redis unreachable must never strand a claimed message: a read answers a short wait
    (fail closed, like the throttle), a write after a send is dropped (the send happened)."""

    def __init__(self, url: str) -> None:
        self.r = redis_client(url)

    def hold(self, key: str, seconds: float) -> None:
        ms = max(int(seconds * 1000), 1)
        pipe = self.r.pipeline()
        pipe.set(key, 1, px=ms, nx=True)
        pipe.pexpire(key, ms, gt=True)  # a longer wait is never shortened by a shorter one
        self._write(pipe.execute)

    def remaining(self, keys: list[str]) -> list[float]:
        try:
            if len(keys) == 1:  # every send asks this: a plain command costs less than a pipeline
                return [max(self.r.pttl(keys[0]), 0) / 1000]
            pipe = self.r.pipeline(transaction=False)
            for key in keys:
                pipe.pttl(key)
            return [max(ms, 0) / 1000 for ms in pipe.execute()]
        except redis_lib.RedisError as exc:
            log.warning("cooldown store unreachable", extra={"error": type(exc).__name__})
            return [UNREACHABLE_WAIT_S] * len(keys)

    def incr(self, key: str, window: float) -> int:
        pipe = self.r.pipeline()
        pipe.incr(key)
        pipe.expire(key, int(window), nx=True)
        result = self._write(pipe.execute)
        return result[0] if result else 0

    def delete(self, key: str) -> None:
        self._write(lambda: self.r.delete(key))

    @staticmethod
    def _write(call):
        try:
            return call()
        except redis_lib.RedisError as exc:
            log.warning("cooldown store unreachable", extra={"error": type(exc).__name__})
            return None


_failed_here: set[str] = set()  # accounts this process saw fail since their last success
_seen: dict[str, tuple[float, float]] = {}  # account -> (answer reused until, cooling until), monotonic


@per_process
def _store(url: str | None):
    return _Redis(url) if url else _Memory()


def _backend():
    return _store(get_settings().redis_url)


def _key(kind: str, account: str, region: str = "") -> str:
    return f"{PREFIX}:{kind}:{account}" + (f":{region}" if region else "")


def hold(account: str, seconds: float) -> None:
    """No request to ``account`` for ``seconds`` (a 429's Retry-After), from any worker."""
    _backend().hold(_key("cooldown", account), seconds)
    t = time.monotonic()
    _seen[account] = (t + SEEN_FOR_S, max(_seen.get(account, (0.0, 0.0))[1], t + seconds))


def remaining(account: str) -> float:
    """Seconds ``account`` still cools down (0: send), as this process last saw it."""
    t = time.monotonic()
    fresh_until, cooling_until = _seen.get(account, (0.0, 0.0))
    if t < fresh_until:
        return max(cooling_until - t, 0.0)
    left = _backend().remaining([_key("cooldown", account)])[0]
    _seen[account] = (t + SEEN_FOR_S, t + left)
    return left


def trip(account: str) -> None:
    """Open the account's circuit now (credentials, permission or credit refused)."""
    _backend().hold(_key("open", account), OPEN_S)


def failure(account: str) -> None:
    """Count a transient failure; enough of them in a row open the circuit."""
    _failed_here.add(account)
    if _backend().incr(_key("failures", account), FAILURE_WINDOW_S) >= FAILURES_TO_OPEN:
        trip(account)
        _backend().delete(_key("failures", account))


def success(account: str) -> None:
    # Only a process that saw failures pays for the reset: the common path costs nothing.
    if account in _failed_here:
        _failed_here.discard(account)
        _backend().delete(_key("failures", account))


def no_route(account: str, region: str | None) -> None:
    _backend().hold(_key("noroute", account, region or "*"), NO_ROUTE_S)


def unusable(accounts: list[str], region: str | None) -> tuple[set[str], set[str]]:
    """(accounts whose circuit is open, accounts with no route to ``region``), in one round trip."""
    keys = [_key("open", a) for a in accounts] + [_key("noroute", a, region or "*") for a in accounts]
    left = _backend().remaining(keys)
    if isinstance(_backend(), _Redis) and left and all(t == UNREACHABLE_WAIT_S for t in left):
        return set(), set()  # nothing known: route as configured
    n = len(accounts)
    return ({a for a, t in zip(accounts, left[:n]) if t > 0},
            {a for a, t in zip(accounts, left[n:]) if t > 0})


def reset() -> None:
    """Forget the process's store (tests switch settings)."""
    _store.forget()
    _failed_here.clear()
    _seen.clear()
