"""The Redis broker transport: kombu's own, made to survive a broker restart.

When the broker goes away, Celery (5.7) first *collects* the consumer's connection, which
detaches the transport from it (``transport.client = None``), and then closes it. Closing the
channel restores its unacknowledged messages, which needs a Redis client, whose parameters are
read from ``transport.client``: an ``AttributeError`` (``'NoneType' object has no attribute
'hostname'``) that Celery does not take for a connection error, so the worker stopped with
"Unrecoverable error" instead of reconnecting (the trace of kombu issue 582, by another path).
Here that case is the connection error it is: Celery swallows it and reconnects. The messages
that could not be restored are redelivered by Redis's own visibility timeout, or republished by
the sweeper (scheduler/sweep.py) long before that.
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict:
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection was already closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel


# The app's ``broker_transport`` for redis:// broker URLs (rediss:// keeps kombu's, for its TLS setup).
TRANSPORT = f"{__name__}:Transport"
