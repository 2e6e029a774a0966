"""The broker: kombu's Redis transport made to survive a broker restart, and many calls of one
task published at the cost of one.

The transport: when the broker goes away, Celery (5.7) first *collects* the consumer's
connection, which detaches the transport from it (``transport.client = None``), and then closes it. Closing the
channel restores its unacknowledged messages, which needs a Redis client, whose parameters are
read from ``transport.client``: an ``AttributeError`` (``'NoneType' object has no attribute
'hostname'``) that Celery does not take for a connection error, so the worker stopped with
"Unrecoverable error" instead of reconnecting (the trace of kombu issue 582, by another path).
Here that case is the connection error it is: Celery swallows it and reconnects. The messages
that could not be restored are redelivered by Redis's own visibility timeout, or republished by
the sweeper (scheduler/sweep.py) long before that.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterable

from celery import Task
from kombu import Producer
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


def random_id() -> str:
    """A random (version 4) UUID as a string, as ``str(uuid.uuid4())`` gives it, in 40% of its
    time: every published send takes two (its task id and kombu's delivery tag), and they were a
    tenth of fan-out's CPU."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


class Channel(kombu_redis.Channel):
    def _next_delivery_tag(self) -> str:
        return random_id()

    def _connparams(self, asynchronous: bool = False) -> dict:
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection was already closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel


# The app's ``broker_transport`` for redis:// broker URLs (rediss:// keeps kombu's, for its TLS setup).
TRANSPORT = f"{__name__}:Transport"


def publish_calls(producer: Producer, task: Task, calls: Iterable[tuple[tuple, dict | None]], queue: str) -> None:
    """Publish ``task(*args, **kwargs)`` for each (args, kwargs) of ``calls`` on ``queue``.

    ``apply_async`` spent about 0.4 ms per call (routing, the options' merge, ``saferepr`` of
    the arguments, a declare of the queue each time): fan-out published at a fifth of kombu's
    own rate. Here Celery builds one message (its protocol 2, whatever this version writes) and
    each call is that message with its own id and arguments. Only for calls whose arguments are
    plain JSON values, without countdown, expiry or links. No publish signals are sent.

    On this module's Redis transport the messages are kombu's own envelope, written with the
    JSON encoded once per call and every call's push in one pipeline (one round trip): kombu's
    ``Producer.publish`` encodes each message twice and was half of fan-out's time.
    tests/test_celery_config.py holds these messages to what ``apply_async`` writes.
    """
    reply_to = task.app.thread_oid
    template = task.app.amqp.create_task_message(
        "template", task.name, (), {}, ignore_result=task.ignore_result, reply_to=reply_to)
    embed = template.body[2]
    producer.maybe_declare(task.app.amqp.queues[queue])
    if isinstance(producer.channel, Channel):
        envelope = _Envelope(template.headers, reply_to, queue)
        with producer.channel.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            for args, kwargs in calls:
                pipe.lpush(queue, envelope.fill(args, kwargs or {}, embed))
            pipe.execute()
        return
    for args, kwargs in calls:
        task_id = random_id()
        kwargs = kwargs or {}
        headers = {**template.headers, "id": task_id, "root_id": task_id,
                   "argsrepr": repr(args), "kwargsrepr": repr(kwargs)}
        producer.publish((args, kwargs, embed), exchange="", routing_key=queue, serializer="json",
                         headers=headers, retry=False, delivery_mode=2, correlation_id=task_id,
                         reply_to=reply_to)


class _Envelope:
    """kombu's Redis message for one task, as JSON with holes for what differs per call."""

    _HOLES = ("body", "id", "argsrepr", "kwargsrepr", "tag")

    def __init__(self, headers: dict, reply_to: str, queue: str) -> None:
        hole = {name: f"\x00{name}\x00" for name in self._HOLES}
        message = {
            "body": hole["body"], "content-encoding": "utf-8", "content-type": "application/json",
            "headers": {**headers, "id": hole["id"], "root_id": hole["id"],
                        "argsrepr": hole["argsrepr"], "kwargsrepr": hole["kwargsrepr"]},
            "properties": {"correlation_id": hole["id"], "reply_to": reply_to, "delivery_mode": 2,
                           "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
                           "body_encoding": "base64", "delivery_tag": hole["tag"]},
        }
        # Split on each hole's JSON form: even parts are fixed text, odd parts name a hole.
        names = {json.dumps(h): name for name, h in hole.items()}
        parts = re.split(f"({'|'.join(map(re.escape, names))})", json.dumps(message))
        self._fixed, self._holes = parts[::2], [names[part] for part in parts[1::2]]

    def fill(self, args: tuple, kwargs: dict, embed: dict) -> str:
        body = base64.b64encode(json.dumps((args, kwargs, embed)).encode()).decode()
        values = {"body": f'"{body}"', "id": f'"{random_id()}"', "tag": f'"{random_id()}"',
                  "argsrepr": json.dumps(repr(args)), "kwargsrepr": json.dumps(repr(kwargs))}
        out = [self._fixed[0]]
        for name, fixed in zip(self._holes, self._fixed[1:]):
            out += (values[name], fixed)
        return "".join(out)
