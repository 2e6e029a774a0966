"""The periodic report jobs: polling, callbacks (signed, retried), and the pure rules beside them."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select, text

from campaigns import clock, db
from campaigns.callbacks import retry_delay
from campaigns.models import Callback, Message
from campaigns.optout import is_opt_out
from campaigns.aggregate import campaign_report
from campaigns.settings import ProviderAccount
from campaigns.signing import webhook_url
from scheduler.jobs import deliver_callbacks
from scheduler.polling import poll_account, poll_budget
from tests.conftest import SECRET, wait_for
from tests.reporting import mark_sent, numbers, stored_campaign, tiko_row
from worker.send import dispatch
from worker.emulator import Knobs
from worker.api.serving import ServerThread


def test_poll_budget_stays_inside_the_accounts_rate():
    account = ProviderAccount(kind="tikosms", base_url="http://x")
    assert poll_budget(account, 200) == 200
    assert poll_budget(account.model_copy(update={"rate_per_s": 4}), 200, every_s=10) == 20
    assert poll_budget(account.model_copy(update={"rate_per_s": 0.01}), 200, every_s=10) == 1


def test_callback_retries_back_off_and_cap():
    assert [retry_delay(n) for n in (1, 2, 3)] == [5, 10, 20]
    assert retry_delay(30) == 3600


@pytest.mark.parametrize("text, stop", [
    ("STOP", True), ("stop please", True), ("  Unsubscribe", True), ("opt-out", True),
    ("Stopped by later", False), ("don't stop", False), ("", False),
])
def test_stop_keywords(text, stop):
    assert is_opt_out(text) is stop


def test_a_lost_push_is_recovered_by_polling(services, emulator):
    emulator.set_knobs(Knobs(push_reports=False, report_delay_ms=0))
    try:
        cid = stored_campaign(numbers(3, seed=41))
        with db.session() as s:
            ids = list(s.scalars(select(Message.id).where(Message.campaign_id == cid)))
        for mid in ids:
            assert dispatch.send(mid).status == "sent"
        assert poll_account("tiko") == 0, "a pushing provider is not polled before the fallback delay"
        later = clock.now() + timedelta(minutes=11)
        wait_for(lambda: poll_account("tiko", now=later) or campaign_report(cid)["delivered"] == 3,
                 timeout=20, message="the polled reports")
    finally:
        emulator.set_knobs(Knobs())
    report = campaign_report(cid)
    assert report["delivered"] == 3 and report["status"] == "completed"
    assert report["cost"] == "0.150000"


class Receiver:
    """A callback endpoint that fails its first ``failures`` requests."""

    def __init__(self, failures: int):
        self.failures = failures
        self.received: list[tuple[str, dict, bytes]] = []
        self.lock = threading.Lock()
        app = FastAPI()

        @app.post("/{name}")
        async def hook(name: str, request: Request):
            body = await request.body()
            with self.lock:
                if self.failures > 0:
                    self.failures -= 1
                    return JSONResponse({}, status_code=500)
                self.received.append((name, dict(request.headers), body))
            return {}

        self.server = ServerThread(app)


def _verified(headers: dict, body: bytes) -> dict:
    expected = hmac.new(SECRET.encode(), headers["x-herald-timestamp"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    assert headers["x-herald-signature"] == f"sha256={expected}"
    return json.loads(body)


def test_completion_sends_signed_callbacks_retried_after_a_failure(services):
    receiver = Receiver(failures=1)
    with receiver.server as server:
        phones = numbers(2, seed=51)
        cid = stored_campaign([{"to": phones[0], "client_ref": "r-1", "callback_url": f"{server.url}/recipient"},
                               phones[1]], callback_url=f"{server.url}/campaign")
        first, second = mark_sent(cid)
        for mid, status in ((first, "DELIVRD"), (second, "UNDELIV")):
            httpx.post(webhook_url("tiko", str(cid)), json=tiko_row(mid, status), timeout=10).raise_for_status()
        assert campaign_report(cid)["status"] == "completed"

        assert deliver_callbacks() == 1, "one of the two was refused with a 500"
        assert deliver_callbacks() == 0, "the refused one waits for its backoff"
        clock.set_clock(lambda: clock._system() + timedelta(seconds=6))
        try:
            assert deliver_callbacks() == 1
        finally:
            clock.set_clock(None)

    bodies = {name: _verified(headers, body) for name, headers, body in receiver.received}
    assert set(bodies) == {"campaign", "recipient"}
    summary = bodies["campaign"]
    assert summary["event"] == "campaign.completed"
    assert summary["campaign"]["delivered"] == 1 and summary["campaign"]["failed"] == 1
    recipient = bodies["recipient"]
    assert recipient["event"] == "message.final" and recipient["status"] == "delivered"
    assert recipient["client_ref"] == "r-1" and phones[0] not in json.dumps(recipient)
    with db.session() as s:
        attempts = sorted(s.scalars(select(Callback.attempts)))
    assert attempts == [1, 2]


def test_stop_replies_suppress_the_sender_and_nothing_else(services):
    from campaigns.models import Suppression
    from campaigns.optout import InboundMessage, record_inbound

    phones = numbers(3, seed=61)
    first = stored_campaign(phones)
    with db.session() as s:  # as if sent through tiko
        s.execute(text("UPDATE messages SET provider = 'tiko', status = 'sent' WHERE campaign_id = :c"),
                  {"c": first})
    with db.session() as s:
        added = record_inbound(s, "tiko", [InboundMessage(phones[0], "STOP"), InboundMessage(phones[1], "thanks!"),
                                           InboundMessage(phones[0], "stop"), InboundMessage("garbage", "STOP")])
        # The same STOP through an account that never sent to the number suppresses nothing.
        assert record_inbound(s, "other", [InboundMessage(phones[2], "STOP")]) == 0
    assert added == 1
    with db.session() as s:
        assert list(s.execute(select(Suppression.service_id, Suppression.phone))) == [(1, phones[0])]
    receipt = stored_campaign(phones)
    assert campaign_report(receipt)["suppressed"] == 1


def test_the_incoming_webhook_needs_a_provider_that_receives(services):
    from campaigns.signing import account_webhook_url

    answer = httpx.post(account_webhook_url("tiko", "incoming"), json={"event": "incoming"}, timeout=10)
    assert answer.status_code == 404 and "no inbound" in answer.text
    wrong = httpx.post(account_webhook_url("tiko", "status").replace("/status/", "/incoming/"),
                       json={}, timeout=10)
    assert wrong.status_code == 401


@pytest.fixture
def silent_gateway(services, monkeypatch):
    """A provider account whose adapter never reports (as the Laravel gateway), named "gw"."""
    from campaigns.ports import Capabilities
    from campaigns.settings import configure, get_settings
    from worker import providers

    monkeypatch.setitem(providers.KINDS, "never-reports", Capabilities(pushes_reports=False, can_poll=False))
    previous = get_settings()
    accounts = {**previous.providers, "gw": ProviderAccount(kind="never-reports", base_url="http://gw")}
    configure(previous.model_copy(update={"providers": accounts}))
    yield "gw"
    configure(previous)


def test_messages_of_a_provider_that_never_reports_count_as_done_not_failed(silent_gateway):
    from campaigns import lifecycle
    from campaigns.reports import close_if_finished

    cid = stored_campaign(numbers(3, seed=71))
    mark_sent(cid, provider=silent_gateway)
    clock.set_clock(lambda: clock._system() + timedelta(days=30))
    try:
        assert lifecycle.expire_overdue() == 0, "no report was ever coming, so none is overdue"
    finally:
        clock.set_clock(None)
    with db.session() as s:
        assert close_if_finished(s, cid)
    report = campaign_report(cid)
    assert report["status"] == "completed"
    assert report["counts"]["sent"] == 3 and report["no_report"] == 3 and report["failed"] == 0
    assert report["done"] == 3 and report["pending"] == 0 and report["delivery_rate"] == 0.0
    assert report["by_provider"][silent_gateway]["no_report"] == 3


def test_a_mobsms_stop_reply_through_the_incoming_webhook_suppresses_the_sender(services, emulator):
    from campaigns.models import Suppression
    from campaigns.settings import configure, get_settings
    from campaigns.signing import account_webhook_url

    previous = get_settings()
    mob = ProviderAccount(kind="mobsms", base_url=f"{emulator.url}/mobsms", token="test-token")
    configure(previous.model_copy(update={"providers": {**previous.providers, "mob": mob}}))
    try:
        phones = numbers(2, seed=83)
        sent = stored_campaign(phones)
        with db.session() as s:  # as if sent through mob: a STOP suppresses for the services that sent
            s.execute(text("UPDATE messages SET provider = 'mob', status = 'sent' WHERE campaign_id = :c"),
                      {"c": sent})
        url = account_webhook_url("mob", "incoming")
        for phone, reply in ((phones[0], "STOP please"), (phones[1], "Thanks!")):
            row = {"id": 55, "sender_number": phone, "message": reply, "status": "received",
                   "direction": "inbound", "created_at": "2026-06-08T09:00:00.000000Z"}
            answer = httpx.post(url, json={"event": "incoming", "data": row,
                                           "timestamp": "2026-06-08T09:00:01Z"}, timeout=10)
            assert answer.status_code == 200, answer.text
        malformed = httpx.post(url, json={"event": "incoming", "data": {"message": "STOP"}}, timeout=10)
        assert malformed.status_code == 422
        with db.session() as s:
            assert list(s.scalars(select(Suppression.phone))) == [phones[0]]
    finally:
        configure(previous)
