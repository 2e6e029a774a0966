"""The broker queues, named in one place, in the order every worker drains them.

Sends have one queue per priority class. Workers consume with kombu's ``priority`` queue order
(worker/app.py): each fetch takes from the first non-empty queue of ``ALL``, so a ``high`` send
waits only behind sends a worker already holds, and ``bulk`` runs only while no ``normal`` send
waits: a flood of ``bulk`` can never hold ``normal`` back. Each running campaign has at most one
window of sends in these queues (worker/send/fanout.py), so no campaign fills one for long.
"""

from __future__ import annotations

import threading
import time

from amqp.exceptions import ChannelError

DEFAULT = "herald"  # fan-out, intake, periodic jobs: cheap, and they feed everything else
SEND_HIGH = "send.high"
SEND = "send"  # normal: a backlog of sends never delays fan-out or intake
SEND_BULK = "send.bulk"

SEND_QUEUES = {"high": SEND_HIGH, "normal": SEND, "bulk": SEND_BULK}

ALL = (DEFAULT, SEND_HIGH, SEND, SEND_BULK)


def send_queue(priority: str | None) -> str:
    return SEND_QUEUES.get(priority or "normal", SEND)


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
