"""The pattern every periodic job follows, so that two beats started by mistake double nothing.

1. The job is a plain function whose effect is made only by conditional writes: an
   ``UPDATE ... WHERE <still in the old state> RETURNING id`` (only one of two concurrent runs
   matches each row), or ``SELECT ... FOR UPDATE SKIP LOCKED`` over the rows it is about to act on
   (two runs get disjoint rows). Run twice at once, or twice in a row, it does the work once.
2. ``@periodic_task("herald.<name>")`` makes it a Celery task that first takes a short Redis lock
   (``herald:job:<name>``); a run that finds the lock taken returns None at once. The lock only
   saves a duplicate scan: it expires after ``lock_ttl_s``, so correctness never rests on it.
3. One line in ``scheduler/schedule.py`` runs it from beat: ``"name": every(seconds, "herald.<name>")``.

    @periodic_task("herald.expire_messages")
    def expire_messages() -> int:
        return lifecycle.expire_overdue()  # UPDATE ... WHERE status = 'sent' (campaigns/messages.py)

The function stays callable directly (tests call it without Celery); the task is ``fn.task``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from campaigns import db
from campaigns.resources import redis_client
from campaigns.settings import get_settings
from worker.app import app

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable)
_local_locks: dict[str, threading.Lock] = {}


def periodic_task(name: str, *, lock_ttl_s: float = 300.0) -> Callable[[F], F]:
    def register(fn: F) -> F:
        # A lost database connection (PostgreSQL restarting) fails the run: it runs again shortly,
        # as a send does, rather than at the next tick (every job is safe to run twice).
        @app.task(name=name, autoretry_for=db.CONNECTION_ERRORS, retry_backoff=1, retry_backoff_max=30,
                  max_retries=5)
        def task():
            with single_flight(name, lock_ttl_s) as acquired:
                if not acquired:
                    log.info("periodic job already running elsewhere; skipped", extra={"job": name})
                    return None
                return fn()

        fn.task = task
        return fn

    return register


@contextmanager
def single_flight(name: str, ttl_s: float) -> Iterator[bool]:
    """Yield True if this run holds the job's lock (shared through Redis when there is one)."""
    url = get_settings().redis_url
    if url is None:
        # Embedded: one process, so a process-local lock is the whole truth.
        lock = _local_locks.setdefault(name, threading.Lock())
        acquired = lock.acquire(blocking=False)
        try:
            yield acquired
        finally:
            if acquired:
                lock.release()
        return
    import redis

    lock = redis_client(url).lock(f"herald:job:{name}", timeout=ttl_s, blocking=False)
    acquired = lock.acquire()
    try:
        yield acquired
    finally:
        if acquired:
            try:
                lock.release()
            except redis.exceptions.LockError:
                pass  # it expired while the job ran: another run may hold it now, leave that alone
