"""Per-process resources (engines, Redis clients, adapters, the embedded secret): one idiom for all.

``@per_process`` makes a function's result once per process and arguments, shared by the
process's threads. Concurrent first callers get one value (a lock, not ``functools.cache``, which
lets each of them build its own), and a forked child (a Celery prefork worker) starts empty,
never sharing its parent's sockets.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Short timeouts: a Redis that stops answering must fail one call, never hang a send.
REDIS_TIMEOUT_S = 5.0

_caches: list[Callable[..., None]] = []


def per_process(factory: Callable[..., T] | None = None, *,
                in_child: Callable[[T], None] | None = None):
    """``in_child(value)`` runs in a forked child on each value inherited from the parent, before
    it is dropped (an engine's pool is let go there without closing the parent's sockets)."""
    if factory is None:
        return functools.partial(per_process, in_child=in_child)
    made: dict[tuple, T] = {}
    lock = threading.Lock()

    @functools.wraps(factory)
    def get(*args):
        try:
            return made[args]
        except KeyError:
            pass
        with lock:
            if args not in made:
                made[args] = factory(*args)
            return made[args]

    def forget(forked: bool = False) -> None:
        nonlocal lock
        if forked and in_child is not None:
            for value in made.values():
                in_child(value)
        made.clear()
        lock = threading.Lock()  # a lock held by a parent's thread at fork time is never released

    get.forget = forget
    _caches.append(forget)
    return get


def _after_fork() -> None:
    for forget in _caches:
        forget(forked=True)


os.register_at_fork(after_in_child=_after_fork)


@per_process
def redis_client(url: str):
    """This process's client for ``url``: every Redis round trip Herald makes is bounded in time."""
    import redis

    return redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S,
                                socket_connect_timeout=REDIS_TIMEOUT_S, health_check_interval=30)
