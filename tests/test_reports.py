"""Delivery reports: replay-safe, order-independent, validated, and an exact aggregate."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import func, select

from campaigns import db
from campaigns.models import DeliveryReport, Message
from campaigns.aggregate import campaign_report
from campaigns.reports import apply_each, apply_report, close_if_finished
from campaigns.signing import account_webhook_url, webhook_url
from campaigns.statuses import MessageStatus, fold_parts
from tests.reporting import SENT_AT, mark_sent, numbers, stored_campaign, tiko_row
from worker.providers import get_provider

D, F, S, E = MessageStatus.DELIVERED, MessageStatus.FAILED, MessageStatus.SENT, MessageStatus.EXPIRED


@pytest.mark.parametrize("total, parts, folded", [
    (2, {1: D}, S),
    (2, {1: D, 2: D}, D),
    (3, {1: D, 3: D}, S),
    (2, {2: F}, F),
    (2, {1: D, 2: E}, E),
    (2, {1: E, 2: F}, F),
])
def test_parts_fold_into_one_status(total, parts, folded):
    assert fold_parts(total, parts) == folded


def _apply_rows(rows: list[dict]) -> int:
    provider = get_provider("tiko")
    moved = 0
    for row in rows:
        with db.session() as s:
            moved += sum(apply_report(s, "tiko", r, row) for r in provider.parse_report(row))
    return moved


def _apply_in_batches(rows: list[dict], size: int, campaign_id=None) -> list[int]:
    """As the webhooks' group commit does: ``size`` requests' rows in one transaction."""
    provider, counts = get_provider("tiko"), []
    for start in range(0, len(rows), size):
        with db.session() as s:
            counts += apply_each(s, [("tiko", campaign_id, provider.parse_report(row), row)
                                     for row in rows[start:start + size]])
    return counts


def _status(message_id: int) -> str:
    with db.session() as s:
        return s.scalar(select(Message.status).where(Message.id == message_id))


def test_the_same_report_posted_1000_times_at_once_changes_state_once(services):
    cid = stored_campaign(numbers(1))
    [mid] = mark_sent(cid)
    url = webhook_url("tiko", str(cid))
    body = tiko_row(mid, "DELIVRD")

    # 16 at once: concurrent, yet within the API's database pool even on a crowded machine.
    with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=16)) as client, \
            ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: client.post(url, json=body), range(1000)))

    assert {a.status_code for a in answers} == {200}
    assert sum(a.json()["applied"] for a in answers) == 1, "exactly one copy moved the message"
    with db.session() as s:
        stored = s.scalar(select(func.count()).select_from(DeliveryReport).where(DeliveryReport.message_id == mid))
    assert stored == 1000, "every copy is kept, append-only"
    assert _status(mid) == "delivered"
    assert campaign_report(cid)["status"] == "completed"


def _script(message_id: int, n: int) -> list[dict]:
    """The reports the ``n``th message receives, duplicates and intermediate statuses included."""
    kind = n % 6
    at = SENT_AT + timedelta(seconds=2 + n % 7)
    later = at + timedelta(seconds=30)
    if kind == 0:  # delivered, reported twice, after an ENROUTE
        return [tiko_row(message_id, "ENROUTE", at=SENT_AT), tiko_row(message_id, "DELIVRD", at=at),
                tiko_row(message_id, "DELIVRD", at=at)]
    if kind == 1:  # undelivered
        return [tiko_row(message_id, "ENROUTE", at=SENT_AT), tiko_row(message_id, "UNDELIV", at=at)]
    if kind == 2:  # two parts, both delivered, each priced
        return [tiko_row(message_id, "DELIVRD", at=at, part=1, total_parts=2),
                tiko_row(message_id, "ENROUTE", at=SENT_AT, part=2, total_parts=2),
                tiko_row(message_id, "DELIVRD", at=later, part=2, total_parts=2)]
    if kind == 3:  # two parts, the second undelivered
        return [tiko_row(message_id, "DELIVRD", at=at, part=1, total_parts=2),
                tiko_row(message_id, "UNDELIV", at=later, part=2, total_parts=2)]
    if kind == 4:  # expired at the operator
        return [tiko_row(message_id, "EXPIRED", at=at)]
    return [tiko_row(message_id, "MYSTERY", at=at)]  # unknown raw status: kept, changes nothing


def _comparable(report: dict) -> dict:
    return {k: v for k, v in report.items()
            if k not in ("campaign_id", "created_at", "started_at", "completed_at", "last_moved_at")}


def test_reports_in_shuffled_order_give_the_same_aggregate(services):
    """In order one by one, and shuffled in batches (the bulk path): the same aggregate."""
    phones = numbers(36, seed=21)
    in_order, shuffled = stored_campaign(phones), stored_campaign(phones)
    rows_a = [r for i, mid in enumerate(mark_sent(in_order)) for r in _script(mid, i)]
    rows_b = [r for i, mid in enumerate(mark_sent(shuffled)) for r in _script(mid, i)]
    random.Random(3).shuffle(rows_b)

    _apply_rows(rows_a)
    _apply_in_batches(rows_b, 7)
    for cid in (in_order, shuffled):
        with db.session() as s:
            close_if_finished(s, cid)

    a, b = campaign_report(in_order), campaign_report(shuffled)
    assert _comparable(a) == _comparable(b)
    assert a["counts"]["delivered"] == 12 and a["counts"]["failed"] == 12
    assert a["counts"]["expired"] == 6 and a["counts"]["sent"] == 6
    assert a["cost"] == str(Decimal("0.05") * (6 + 6 + 12 + 12 + 6) + Decimal("0.000000"))
    assert a["time_to_delivery_s"]["p95"] is not None


def test_a_bad_or_missing_token_gets_401_and_changes_nothing(services, api_server):
    cid = stored_campaign(numbers(1))
    [mid] = mark_sent(cid)
    other = stored_campaign(numbers(1, seed=9))
    body = tiko_row(mid, "DELIVRD")
    good = webhook_url("tiko", str(cid))
    base = f"{api_server.url}/v1/webhooks/tiko"
    bad_urls = [
        f"{base}/{cid}/{'0' * 40}",                      # wrong token
        f"{base}/{cid}",                                  # no token
        webhook_url("tiko", str(other)).replace(str(other), str(cid)),  # another campaign's token
        f"{base}/status/{good.rsplit('/', 1)[1]}",        # a campaign token on the account webhook
        account_webhook_url("tiko", "incoming").replace("/incoming/", "/status/"),
    ]
    for url in bad_urls:
        answer = httpx.post(url, json=body, timeout=10)
        assert answer.status_code == 401, url.replace(api_server.url, "")
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(DeliveryReport)) == 0
    assert _status(mid) == "sent"


@pytest.mark.parametrize("content, reason", [
    (b"not json", "must be JSON"),
    (b"[1, 2]", "JSON object"),
    (b"{}", "has no status"),
    (b'{"status": "DELIVRD"}', "names no message"),
    (b'{"data": []}', "no report"),
    (b'{"data": [{"message_id": "pm-1", "status": "DELIVRD"}, {"status": "DELIVRD"}]}', "names no message"),
])
def test_a_malformed_body_gets_422_and_stores_nothing(services, content, reason):
    cid = stored_campaign(numbers(1))
    mark_sent(cid)
    answer = httpx.post(webhook_url("tiko", str(cid)), content=content,
                        headers={"content-type": "application/json"}, timeout=10)
    assert answer.status_code == 422
    assert reason in answer.text
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(DeliveryReport)) == 0


def test_a_report_cannot_reach_another_campaigns_message(services):
    ours, theirs = stored_campaign(numbers(1)), stored_campaign(numbers(1, seed=8))
    mark_sent(ours)
    [their_message] = mark_sent(theirs)
    answer = httpx.post(webhook_url("tiko", str(ours)), json=tiko_row(their_message, "UNDELIV"), timeout=10)
    assert answer.json() == {"applied": 0}
    assert _status(their_message) == "sent"


def test_one_batch_of_requests_moves_only_what_each_may_touch(services):
    """Requests applied together (the group commit) keep each request's campaign scope, and a
    report repeated within the batch moves its message once."""
    ours, theirs = stored_campaign(numbers(3)), stored_campaign(numbers(1, seed=8))
    a, b, c = mark_sent(ours)
    [their_message] = mark_sent(theirs)
    rows = [tiko_row(a, "DELIVRD"), tiko_row(their_message, "UNDELIV"), tiko_row(a, "DELIVRD"),
            tiko_row(b, "ENROUTE"), tiko_row(b, "UNDELIV"), tiko_row(c, "EXPIRED"), tiko_row(10**12, "DELIVRD")]
    assert _apply_in_batches(rows, len(rows), campaign_id=ours) == [1, 0, 0, 0, 1, 1, 0]  # ENROUTE is no news after sent
    assert [_status(m) for m in (a, b, c, their_message)] == ["delivered", "failed", "expired", "sent"]
    with db.session() as s:
        stored = s.execute(select(DeliveryReport.message_id).order_by(DeliveryReport.id)).scalars().all()
    assert stored == [a, None, a, b, b, c, None]  # every report kept raw; the forged and unknown unmatched


def test_the_account_status_webhook_applies_reports_for_its_own_account(services):
    cid = stored_campaign(numbers(2))
    first, second = mark_sent(cid)
    url = account_webhook_url("tiko", "status")
    assert httpx.post(url, json=tiko_row(first, "DELIVRD"), timeout=10).json() == {"applied": 1}
    assert httpx.post(url, json=tiko_row(second, "UNDELIV"), timeout=10).json() == {"applied": 1}
    assert campaign_report(cid)["status"] == "completed"


def test_aggregate_equals_an_independent_count_over_5000_recipients(services):
    cid = stored_campaign(numbers(5000, seed=77))
    ids = mark_sent(cid)
    rng = random.Random(5)
    rows = []
    for mid in ids:
        roll = rng.random()
        if roll < 0.05:
            continue  # no report yet
        status = "DELIVRD" if roll < 0.85 else "UNDELIV" if roll < 0.95 else "EXPIRED"
        at = SENT_AT + timedelta(seconds=rng.randrange(1, 600))
        rows.append(tiko_row(mid, status, at=at, cost=rng.choice(["0.04", "0.05", "0.07"])))
        if roll < 0.2:
            rows.append(tiko_row(mid, "ENROUTE", at=SENT_AT))  # late, changes nothing
    _apply_in_batches(rows, 1000)

    report = campaign_report(cid)

    with db.session() as s:
        messages = s.execute(select(Message.status, Message.region, Message.segments, Message.cost,
                                    Message.sent_at, Message.final_at)
                             .where(Message.campaign_id == cid)).all()
    counts = Counter(m.status for m in messages)
    assert report["accepted"] == len(messages) == 5000
    assert report["counts"] == {st.value: counts.get(st.value, 0) for st in MessageStatus}
    assert report["delivered"] == counts["delivered"]
    assert report["delivery_rate"] == round(counts["delivered"] / 5000, 4)
    assert report["segments"] == sum(m.segments for m in messages)
    assert Decimal(report["cost"]) == sum(m.cost for m in messages if m.cost is not None)
    by_country = Counter((m.region, m.status) for m in messages)
    for region, group in report["by_country"].items():
        for status, n in group["counts"].items():
            assert n == by_country.get((region, status), 0)
    assert report["by_provider"]["tiko"]["accepted"] == 5000
    waits = sorted((m.final_at - m.sent_at).total_seconds() for m in messages if m.status == "delivered")
    p50, p95 = statistics.quantiles(waits, n=100, method="inclusive")[49], \
        statistics.quantiles(waits, n=100, method="inclusive")[94]
    assert report["time_to_delivery_s"] == {"p50": round(p50, 3), "p95": round(p95, 3)}


def test_reports_are_stored_when_the_message_is_unknown(services):
    answer = httpx.post(account_webhook_url("tiko", "status"),
                        json={"message_id": "nobody", "status": "DELIVRD"}, timeout=10)
    assert answer.json() == {"applied": 0}
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(DeliveryReport)) == 1

