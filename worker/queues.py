"""The broker queues, named in one place."""

from __future__ import annotations

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
