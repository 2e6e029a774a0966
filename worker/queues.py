"""The broker queues, named in one place."""

from __future__ import annotations

import threading
import time

from amqp.exceptions import ChannelError

DEFAULT = "herald"  # fan-out, intake, periodic jobs
SEND = "send"  # sends only: a backlog of them never delays fan-out or intake

ALL = (DEFAULT, SEND)


def depth(connection, queue: str) -> int:
    """Tasks waiting in ``queue`` (not those already taken by a worker)."""
    try:
        return connection.default_channel.queue_declare(queue=queue, passive=True).message_count
    except ChannelError:  # the queue does not exist: nothing was ever left in it
        return 0


# Asking the workers costs a broadcast and up to CONSUMERS_TIMEOUT_S of waiting for replies:
# /readyz and /metrics share one answer for CONSUMERS_CACHE_S.
CONSUMERS_TIMEOUT_S = 2.0
CONSUMERS_CACHE_S = 5.0
_consumers: tuple[float, dict[str, int]] | None = None
_consumers_lock = threading.Lock()


def consumers(app) -> dict[str, int]:
    """Live workers consuming each queue, as the workers themselves answer (``inspect
    active_queues``): a dead or hung worker does not answer, so it does not count."""
    global _consumers
    with _consumers_lock:
        if _consumers is not None and time.monotonic() - _consumers[0] < CONSUMERS_CACHE_S:
            return _consumers[1]
        replies = app.control.inspect(timeout=CONSUMERS_TIMEOUT_S).active_queues() or {}
        counts = dict.fromkeys(ALL, 0)
        for worker_queues in replies.values():
            for name in {q["name"] for q in worker_queues}:
                counts[name] = counts.get(name, 0) + 1
        _consumers = (time.monotonic(), counts)
        return counts
