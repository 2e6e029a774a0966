"""The baselines: for each stage, the same work with none of Herald's in it.

- dispatch: a bare Celery task that only makes the provider HTTP call a Herald send makes, callback
  URL included (the emulator then does the same work for either). Workers
  load it with ``--include worker.bench.baseline``; it goes through the same adapter to the same
  emulator, but touches no database. Tasks carry an index only; the number is a fixed valid one.
- fan-out: kombu publishing id-only messages in the same batches, with no database reads.
- reports: ``bare_receiver``, a plain ASGI app served by the same server with the same workers,
  that reads each pushed report and answers 200 without parsing or storing it.

A stage's rate over its baseline's is what Herald's own work costs.
"""

from __future__ import annotations

import functools

from campaigns.signing import webhook_url
from worker.app import app
from worker.providers import Outgoing, get_provider

QUEUE = "bench.baseline"
FANOUT_QUEUE = "bench.fanout"
ACCOUNT = "bench"
SENDER = "Herald"
BODY = "Your Herald benchmark code is 1234."
NUMBER = "+447400123456"
CAMPAIGN = "00000000-0000-4000-8000-000000000000"  # names no campaign: its reports are dropped unsent


@functools.cache
def _callback_url() -> str:
    # A script that wants delivery reports passes a callback URL too; built once, as it would be.
    return webhook_url(ACCOUNT, CAMPAIGN)


@app.task(name="herald.bench.bare_send")
def bare_send(index: int) -> None:
    get_provider(ACCOUNT).send(Outgoing(reference=f"baseline-{index}", to=NUMBER, body=BODY, sender=SENDER,
                                        callback_url=_callback_url()))


def bare_publish(ids: list[int]) -> None:
    """Publish one id-only message per id through kombu alone, pipelined as fan-out's batches are."""
    with app.producer_or_acquire() as producer, producer.batch(max(len(ids), 1)):
        for message_id in ids:
            producer.publish([message_id], routing_key=FANOUT_QUEUE, serializer="json", retry=False)


_ANSWER = b'{"applied":1}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_ANSWER)).encode())]


async def bare_receiver(scope, receive, send) -> None:
    """Read the whole request body, answer 200: the wire and the ASGI server, nothing else."""
    if scope["type"] != "http":  # lifespan: nothing to set up
        message = await receive()
        while message["type"] != "lifespan.shutdown":
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            message = await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _ANSWER})
