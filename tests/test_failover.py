"""Routing, failover, Retry-After and ambiguous sends through a real worker and the emulators."""

from __future__ import annotations

import json
from collections import Counter

import phonenumbers
import pytest
from sqlalchemy import select

import campaigns
from campaigns import db
from campaigns.models import Message
from campaigns.aggregate import campaign_report
from campaigns.schema import CampaignSpec
from campaigns.settings import ProviderAccount, configure, get_settings
from tests.conftest import wait_for
from worker.send import cooldown
from worker.emulator import Knobs
from worker.emulator.process import EmulatorProcess

pytestmark = pytest.mark.services
# A send that passed its cooldown check before the 429 was recorded still goes out; on a busy
# CPU (the suite runs in two processes) the check-to-request path can take a few hundred ms.
IN_FLIGHT_S = 0.25


@pytest.fixture(scope="module")
def side():
    """A second emulator whose behaviour each test sets (the shared one stays well-behaved)."""
    with EmulatorProcess(Knobs(report_delay_ms=50)) as process:
        yield process


def numbers(n: int) -> list[str]:
    out = []
    for i in range(1000):
        raw = f"+1202555{i:04d}"
        if phonenumbers.is_valid_number(phonenumbers.parse(raw)):
            out.append(raw)
        if len(out) == n:
            return out
    raise AssertionError("not enough valid numbers")


@pytest.fixture
def with_accounts(services):
    """Install extra accounts and routes here and in the worker subprocesses' environment."""
    previous = get_settings()

    def install(accounts: dict[str, ProviderAccount], routes: dict | None = None) -> dict[str, str]:
        providers = {**previous.providers, **accounts}
        configure(previous.model_copy(update={"providers": providers, "routes": routes or {}}))
        cooldown.reset()
        return {
            "HERALD_PROVIDERS": json.dumps({
                name: {**a.model_dump(mode="json"), "token": a.token.get_secret_value(),
                       "password": a.password.get_secret_value()}
                for name, a in providers.items()}),
            "HERALD_ROUTES": json.dumps(routes or {}),
        }

    yield install
    configure(previous)
    cooldown.reset()


def submit(target: str, recipients: list[str], message: str = "Your code is 1234"):
    spec = CampaignSpec.model_validate({"from": "Herald", "message": message, "provider": target})
    return campaigns.submit(spec, recipients)


def completed(campaign_id: str, timeout: float = 60) -> dict:
    return wait_for(lambda: (r := campaign_report(campaign_id))["status"] == "completed" and r,
                    timeout=timeout, message="the campaign to complete")


def rows(campaign_id: str):
    with db.session() as s:
        return s.execute(select(Message).where(Message.campaign_id == campaign_id)).scalars().all()


def test_failover_completes_through_the_next_provider_exactly_once(
        with_accounts, start_worker, emulator, side):
    side.set_knobs(Knobs(fail_5xx=1.0))
    env = with_accounts(
        {"a": ProviderAccount(kind="mobsms", base_url=f"{side.url}/mobsms", token="test-token",
                              timeout_s=5, prices={"*": "0.01"}),  # cheaper, so tried first
         "b": ProviderAccount(kind="tikosms", base_url=f"{emulator.url}/tikosms", token="test-token",
                              timeout_s=5, prices={"*": "0.05"})},
        routes={"ab": {"*": ["a", "b"]}},
    )
    start_worker("--pool", "threads", "--concurrency", "4", env=env)
    recipients = numbers(20)

    receipt = submit("ab", recipients)
    report = completed(receipt.campaign_id)

    messages = rows(receipt.campaign_id)
    ours = {str(m.id) for m in messages}
    taken = [r for r in side.records()["records"] + emulator.records()["records"] if r["client_ref"] in ours]
    assert Counter(r["client_ref"] for r in taken) == Counter(ours), "each recipient accepted exactly once"
    assert all(r["provider"] == "tikosms" for r in taken)
    assert {m.provider for m in messages} == {"b"}
    assert report["delivered"] == len(recipients)
    tried_a = [q for q in side.records()["requests"] if q[2] == "/api/sms" and q[3] == 500]
    assert tried_a, "the cheaper account was tried first"
    assert len(tried_a) < 3 * len(recipients), "the open circuit kept traffic off the failing account"


def test_an_invalid_number_never_fails_over(with_accounts, side):
    from worker.send import dispatch

    side.set_knobs(Knobs())
    with_accounts(
        {"c": ProviderAccount(kind="smsforai", base_url=f"{side.url}/smsforai/api/v1", token="test-token",
                              prices={"*": "0.01"}),
         "d": ProviderAccount(kind="aikdata", base_url=f"{side.url}/aikdata/v1/sms", token="test-token",
                              prices={"*": "0.05"})},
        routes={"cd": {"*": ["c", "d"]}},
    )
    receipt = submit("cd", numbers(1))
    [message] = rows(receipt.campaign_id)
    with db.session() as s:  # a number intake accepted but the provider refuses (422)
        s.get(Message, message.id).phone = "+1202"

    assert dispatch.send(message.id).status == "failed"

    [message] = rows(receipt.campaign_id)
    assert message.status == "failed" and "422" in message.error
    assert [q[1] for q in side.records()["requests"] if q[2].endswith("/send")] == ["smsforai"]


def test_retry_after_is_honoured_by_every_worker_process(with_accounts, start_worker, side):
    side.set_knobs(Knobs(rate_limit=2, rate_window_s=1.0, retry_after_s=2))
    # AikData's emulator sends Retry-After with a 429 (SMS for AI documents none).
    env = with_accounts({"r": ProviderAccount(kind="aikdata", base_url=f"{side.url}/aikdata/v1/sms",
                                              token="test-token", timeout_s=5)})
    start_worker("--pool", "prefork", "--concurrency", "2", env=env)
    recipients = numbers(6)

    receipt = submit("r", recipients)
    wait_for(lambda: all(m.status == "sent" for m in rows(receipt.campaign_id)), timeout=60,
             message="every message sent")

    log = sorted(q for q in side.records()["requests"] if q[1] == "aikdata" and q[2].endswith("/send"))
    limited = [q for q in log if q[3] == 429]
    assert limited, "the emulator never rate limited: the test proves nothing"
    for at, *_, answered in limited:
        # Requests arriving within IN_FLIGHT_S of the 429's answer had already passed their check
        # while it was on the wire; every later one must wait out the 2 seconds.
        early = [q for q in log if answered + IN_FLIGHT_S < q[0] < at + 2.0]
        assert not early, f"a request came {early[0][0] - at:.2f}s after a 429 with Retry-After: 2"
    assert sum(q[3] == 200 for q in log) == len(recipients)


def test_an_ambiguous_send_is_resolved_by_lookup_and_sent_once(with_accounts, start_worker, side):
    # No pushed reports, and no my_id in MobSMS's rows (as its document shows them): only the
    # lookup of the outbound row with this recipient and text can settle it.
    side.set_knobs(Knobs(answer_late_ms=2500, answer_late_ratio=1.0, report_delay_ms=100,
                         push_reports=False))
    env = with_accounts({"m": ProviderAccount(kind="mobsms", base_url=f"{side.url}/mobsms",
                                              token="test-token", timeout_s=0.5)})
    start_worker("--pool", "threads", "--concurrency", "2", env=env)

    receipt = submit("m", numbers(2))
    completed(receipt.campaign_id)

    messages = rows(receipt.campaign_id)
    ours = {str(m.id): m for m in messages}
    taken = [r for r in side.records()["records"] if r["client_ref"] in ours]
    assert Counter(r["client_ref"] for r in taken) == Counter(ours.keys()), "sent exactly once"
    for record in taken:
        message = ours[record["client_ref"]]
        assert message.status == "delivered"
        assert message.provider_message_id == record["message_id"]  # learnt from the lookup
    # A send's answer is logged when it is given, late: possibly after the lookup settled it.
    requests = wait_for(lambda: (r := side.records()["requests"]) and sum(
        q[2] == "/api/sms" and q[3] == 201 for q in r) == len(messages) and r, timeout=10,
        message="the late answers logged")
    assert sum(q[2] == "/api/sms" and q[3] == 200 for q in requests) >= len(messages)  # the lookups
