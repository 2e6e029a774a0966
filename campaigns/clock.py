"""The one source of time. Tests shift or freeze it instead of sleeping.

In one process, ``set_clock(callable)`` replaces the source. To move time in worker and beat
subprocesses as well, set ``HERALD_CLOCK_KEY`` (testing only): every process then reads its time
through a :class:`RedisClock` on that key in ``HERALD_REDIS_URL``, which a test sets with
``freeze(at)`` or ``shift(seconds)``. While the key is absent the system clock is used.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from campaigns.errors import ConfigurationError
from campaigns.resources import redis_client


def _system() -> datetime:
    return datetime.now(timezone.utc)


_source: list[Callable[[], datetime]] = [_system]


def now() -> datetime:
    return _source[0]()


def set_clock(source: Callable[[], datetime] | None) -> None:
    """Replace the time source in this process (None restores the system clock)."""
    _source[0] = source or _system


class RedisClock:
    """Time shared by every process through one Redis key: an ISO instant (frozen) or ``+/-seconds``."""

    def __init__(self, redis_url: str, key: str):
        self.url = redis_url
        self.key = key

    @property
    def redis(self):
        return redis_client(self.url)

    def __call__(self) -> datetime:
        value = self.redis.get(self.key)
        if value is None:
            return _system()
        text = value.decode()
        if text[0] in "+-":
            return _system() + timedelta(seconds=float(text))
        return datetime.fromisoformat(text)

    def freeze(self, at: datetime) -> None:
        self.redis.set(self.key, at.astimezone(timezone.utc).isoformat())

    def shift(self, seconds: float) -> None:
        """Run ``seconds`` ahead of (or behind) the system clock, still ticking."""
        self.redis.set(self.key, f"{seconds:+f}")

    def clear(self) -> None:
        self.redis.delete(self.key)


def install(redis_url: str | None, key: str | None) -> None:
    """Use a shared :class:`RedisClock` when ``HERALD_CLOCK_KEY`` is set; otherwise change nothing."""
    if key:
        if not redis_url:
            raise ConfigurationError("HERALD_CLOCK_KEY needs HERALD_REDIS_URL")
        set_clock(RedisClock(redis_url, key))
