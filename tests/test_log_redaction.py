"""No phone number and no message text in Celery's own lines and events for campaigns.submit, nor
in a logged database error's traceback."""

from __future__ import annotations

import io
import logging
import re
import threading
import uuid

import pytest
from sqlalchemy import text

from campaigns import db
from campaigns.errors import SubmissionError
from tests.conftest import wait_for
from worker.logs import RedactPersonalData

TEXT = "Secret offer for Amina: code 7781"
NUMBERS = ["+447400123456", "07400 123457"]


def _leaks(blob: str) -> list[str]:
    """Any written form of the test numbers, or the message text, found in ``blob``."""
    digits = re.sub(r"\D", "", blob)
    found = [n for n in ("7400123456", "7400123457") if n in digits]
    return found + ([TEXT] if "Secret offer" in blob or "Amina" in blob else [])


def test_celery_lines_and_events_of_campaigns_submit_are_redacted(services, start_worker):
    from worker.app import app

    worker = start_worker("--pool", "threads", "--concurrency", "2", "-E")
    events: list[dict] = []
    with app.connection() as conn:
        receiver = app.events.Receiver(conn, handlers={"*": events.append})
        listener = threading.Thread(target=lambda: receiver.capture(limit=None, timeout=None, wakeup=True),
                                    daemon=True)
        listener.start()
        body = {"from": "Herald", "message": TEXT, "default_region": "GB", "recipients": NUMBERS,
                "scheduled_at": "2099-01-01T00:00:00Z"}
        ok = app.send_task("campaigns.submit", kwargs={**body, "service": "default"})
        ok.get(timeout=60)
        bad = app.send_task("campaigns.submit", kwargs={**body, "service": "nobody"})
        with pytest.raises(SubmissionError):
            bad.get(timeout=60)
        mine = {ok.id, bad.id}
        wait_for(lambda: {e.get("uuid") for e in events if e["type"] in ("task-succeeded", "task-failed")} >= mine,
                 timeout=30, message="both tasks' final events")
        receiver.should_stop = True
    about = [e for e in events if e.get("uuid") in mine]
    assert {e["type"] for e in about} >= {"task-received", "task-succeeded", "task-failed"}
    assert not _leaks(repr(about)), about
    received = [e for e in about if e["type"] == "task-received"]
    assert all(e["kwargs"] == "<redacted>" for e in received)

    log = worker.log.read_text()
    assert f"campaigns.submit[{ok.id}] succeeded" in log and f"campaigns.submit[{bad.id}]" in log
    assert not _leaks(log), _leaks(log)


def test_a_database_errors_traceback_keeps_frames_and_types_only(services):
    """A real IntegrityError quotes the doubled number in its DETAIL; the logged line does not."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactPersonalData())
    logger = logging.getLogger(f"test-redaction-{uuid.uuid4().hex}")
    logger.addHandler(handler)
    cid = uuid.uuid4()
    try:
        with db.session() as s:
            s.execute(text("INSERT INTO campaigns (id, service_id, status, sender, template, submitted, segments, "
                           "fanout_checkpoint) VALUES (:c, 1, 'running', 'H', :t, 0, 0, 0)"), {"c": cid, "t": TEXT})
            for _ in range(2):
                s.execute(text("INSERT INTO messages (campaign_id, status, phone, encoding, segments, attempts) "
                               "VALUES (:c, 'queued', '+447400123456', 'GSM7', 1, 0)"), {"c": cid})
    except Exception:  # noqa: BLE001 - the point is to log it
        logger.exception("submission failed", extra={"campaign_id": str(cid)})
    logged = stream.getvalue()
    assert "IntegrityError" in logged and "message withheld" in logged and 'File "' in logged
    assert not _leaks(logged), logged
