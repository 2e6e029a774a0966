"""The broker queues, named in one place, in the order every worker drains them.

Sends have one queue per priority class. Workers consume with kombu's ``priority`` queue order
(worker/app.py): each fetch takes from the first non-empty queue of ``ALL``, so a ``high`` send
waits only behind sends a worker already holds, and ``bulk`` runs only while no ``normal`` send
waits: a flood of ``bulk`` can never hold ``normal`` back. Each running campaign has at most one
window of sends in these queues (worker/send/fanout.py), so no campaign fills one for long.
"""

from __future__ import annotations

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
