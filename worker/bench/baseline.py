"""The baseline: a bare Celery task that only makes the provider HTTP call a Herald send makes.

Workers load it with ``--include worker.bench.baseline``. It goes through the same adapter to the
same emulator, but touches no database: dispatch's rate over this one is what Herald's claim,
record and bookkeeping cost. Tasks carry an index only; the number is a fixed valid one.
"""

from __future__ import annotations

from worker.app import app
from worker.providers import Outgoing, get_provider

QUEUE = "bench.baseline"
ACCOUNT = "bench"
SENDER = "Herald"
BODY = "Your Herald benchmark code is 1234."
NUMBER = "+447400123456"


@app.task(name="herald.bench.bare_send")
def bare_send(index: int) -> None:
    get_provider(ACCOUNT).send(Outgoing(reference=f"baseline-{index}", to=NUMBER, body=BODY, sender=SENDER))
