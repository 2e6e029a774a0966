"""A webhook token is a capability for one account and one campaign: a report it carries changes,
and is stored against, only a sent message of that campaign through that account. Anything else
is kept raw as unmatched and changes nothing; the genuine reports then apply normally."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import select

from campaigns import db
from campaigns.models import DeliveryReport, Message
from campaigns.settings import ProviderAccount, configure, get_settings
from campaigns.signing import account_webhook_url, webhook_url
from tests.reporting import mark_sent, numbers, stored_campaign, tiko_row


def _post(url: str, rows: list[dict]) -> httpx.Response:
    return httpx.post(url, json={"data": rows}, timeout=10)


def _message(mid: int) -> tuple[str, str | None]:
    with db.session() as s:
        m = s.get(Message, mid)
        return m.status, m.raw_status


def _stored_against(mid: int) -> int:
    with db.session() as s:
        return len(s.scalars(select(DeliveryReport.id).where(DeliveryReport.message_id == mid)).all())


def _unmatched(*mids: int) -> int:
    """Unmatched reports naming these messages (``tiko_row``'s provider id), or naming none when
    none are given. Never the whole table: a late push from an earlier test's emulator lands
    here as an unmatched report of its own, at any moment (CI saw one)."""
    named = (DeliveryReport.provider_message_id.in_([f"pm-{m}" for m in mids]) if mids
             else DeliveryReport.provider_message_id.is_(None))
    with db.session() as s:
        return len(s.scalars(select(DeliveryReport.id).where(DeliveryReport.message_id.is_(None), named)).all())


@pytest.fixture
def second_account(services, emulator):
    """A second TikoSMS account, `tiko2`, next to `tiko`."""
    previous = get_settings()
    other = ProviderAccount(kind="tikosms", base_url=f"{emulator.url}/tikosms", token="test-token")
    configure(previous.model_copy(update={"providers": {**previous.providers, "tiko2": other}}))
    yield "tiko2"
    configure(previous)


def test_a_part_report_for_another_campaigns_message_changes_nothing(services):
    x, y = stored_campaign(numbers(1, seed=1)), stored_campaign(numbers(1, seed=2))
    [mx], [my] = mark_sent(x), mark_sent(y)
    # X's token, naming Y's message: a failed first part that would fold Y's message into `failed`.
    attack = _post(webhook_url("tiko", str(x)), [tiko_row(my, "UNDELIV", part=1, total_parts=2)])
    assert attack.status_code == 200 and attack.json() == {"applied": 0}
    assert _message(my) == ("sent", None) and _stored_against(my) == 0 and _unmatched(my) == 1

    # Y's genuine parts apply as if the attack never happened: both delivered, so delivered.
    for part in (1, 2):
        genuine = _post(webhook_url("tiko", str(y)), [tiko_row(my, "DELIVRD", part=part, total_parts=2)])
        assert genuine.status_code == 200
    assert _message(my)[0] == "delivered" and _stored_against(my) == 2
    assert _message(mx)[0] == "sent"


def test_a_token_works_only_under_its_own_accounts_path(services, second_account):
    x = stored_campaign(numbers(1, seed=3))
    [mx] = mark_sent(x, provider="tiko")
    row = [tiko_row(mx, "UNDELIV")]
    # tiko's token under tiko2's path: refused outright.
    moved = webhook_url("tiko", str(x)).replace("/webhooks/tiko/", "/webhooks/tiko2/")
    assert _post(moved, row).status_code == 401
    # tiko2's own token for this campaign: accepted, but the message went through tiko.
    other = _post(webhook_url("tiko2", str(x)), row)
    assert other.status_code == 200 and other.json() == {"applied": 0}
    # tiko2's account webhook cannot touch tiko's messages either.
    assert _post(account_webhook_url("tiko2", "status"), row).json() == {"applied": 0}
    assert _message(mx) == ("sent", None) and _stored_against(mx) == 0 and _unmatched(mx) == 2

    assert _post(webhook_url("tiko", str(x)), [tiko_row(mx, "DELIVRD")]).json() == {"applied": 1}
    assert _message(mx)[0] == "delivered"


def test_the_account_webhook_never_touches_a_queued_message(services):
    cid = stored_campaign(numbers(2, seed=4))
    with db.session() as s:
        queued = sorted(s.scalars(select(Message.id).where(Message.campaign_id == cid)))
    url = account_webhook_url("tiko", "status")
    answer = _post(url, [tiko_row(mid, "UNDELIV") for mid in queued])
    assert answer.status_code == 200 and answer.json() == {"applied": 0}
    assert [_message(mid)[0] for mid in queued] == ["queued", "queued"]
    assert _unmatched(*queued) == 2
    # The campaign's own token cannot touch them while queued either.
    assert _post(webhook_url("tiko", str(cid)), [tiko_row(queued[0], "UNDELIV")]).json() == {"applied": 0}

    mark_sent(cid)
    assert _post(url, [tiko_row(mid, "DELIVRD") for mid in queued]).json() == {"applied": 2}
    assert [_message(mid)[0] for mid in queued] == ["delivered", "delivered"]


def test_huge_bodies_get_413_at_once_and_never_block_another_campaigns_report(services):
    big, other = stored_campaign(numbers(1, seed=5)), stored_campaign(numbers(1, seed=6))
    mark_sent(big)
    [mo] = mark_sent(other)
    big_url = webhook_url("tiko", str(big))
    ten_mb = b'{"data": [' + b" " * (10 * 1024 * 1024) + b"]}"
    many = json.dumps({"data": [{}] * 200_000}).encode()
    assert len(many) < 1_000_000  # under the byte limit: refused for its item count

    def timed(send) -> tuple[int, float]:
        started = time.monotonic()
        status = send()
        return status, time.monotonic() - started

    def declared() -> int:
        return httpx.post(big_url, content=ten_mb, timeout=10).status_code

    def streamed() -> int:  # no Content-Length: counted as it arrives
        def chunks():
            for start in range(0, len(ten_mb), 65536):
                yield ten_mb[start:start + 65536]
        try:
            return httpx.post(big_url, content=chunks(), timeout=10).status_code
        except httpx.HTTPError:  # the server may close before the rest is sent: only the status counts
            return -1

    def items() -> int:
        return httpx.post(big_url, content=many, headers={"content-type": "application/json"},
                          timeout=10).status_code

    def report() -> int:
        return _post(webhook_url("tiko", str(other)), [tiko_row(mo, "DELIVRD")]).status_code

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(timed, f) for f in (declared, items, report)]
        (d_status, d_s), (i_status, i_s), (r_status, r_s) = [f.result() for f in futures]
    assert (d_status, i_status, r_status) == (413, 413, 200)
    # Margins for a busy two-core machine: each is a few ms when idle.
    assert d_s < 1 and i_s < 1 and r_s < 1, (d_s, i_s, r_s)
    assert _message(mo)[0] == "delivered"

    status, elapsed = timed(streamed)
    assert status in (413, -1) and elapsed < 2
    with db.session() as s:
        assert s.scalars(select(DeliveryReport.id)).all() != [] and _stored_against(mo) == 1
    assert _unmatched() == 0  # nothing of the huge bodies was stored
