"""Pause, resume and cancel a campaign; expiry; the messages listing."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select, update

import campaigns
from campaigns import clock, db, lifecycle
from campaigns.errors import InvalidTransition
from campaigns.models import Callback, Message
from campaigns.aggregate import campaign_report
from campaigns.schema import CampaignSpec
from campaigns.statuses import MessageStatus
from tests.conftest import wait_for
from tests.reporting import SENT_AT, mark_sent, numbers, stored_campaign
from worker.emulator import Knobs


def _by_status(campaign_id) -> Counter:
    with db.session() as s:
        return Counter(dict(s.execute(select(Message.status, func.count())
                                      .where(Message.campaign_id == campaign_id).group_by(Message.status)).all()))


def _sent_refs(emulator, ours: set[str]) -> Counter:
    return Counter(r["client_ref"] for r in emulator.records()["records"] if r["client_ref"] in ours)


def test_pause_and_resume_mid_campaign_send_each_recipient_exactly_once(services, start_worker, emulator):
    emulator.set_knobs(Knobs(latency_ms=60))
    try:
        start_worker("--pool", "threads", "--concurrency", "2")
        receipt = campaigns.submit(CampaignSpec.model_validate({"from": "Herald", "message": "Hi"}),
                                   numbers(40, seed=31))
        cid = receipt.campaign_id
        with db.session() as s:
            ours = {str(i) for i in s.scalars(select(Message.id).where(Message.campaign_id == cid))}
        wait_for(lambda: len(_sent_refs(emulator, ours)) >= 5, timeout=60, interval=0.05,
                 message="the first sends")

        lifecycle.pause(cid)
        at_pause = len(_sent_refs(emulator, ours))
        # Sends already claimed finish; none starts after.
        wait_for(lambda: _by_status(cid)["sending"] == 0, timeout=30, message="in-flight sends to finish")
        settled = len(_sent_refs(emulator, ours))
        time.sleep(2)
        assert len(_sent_refs(emulator, ours)) == settled, "a send started while paused"
        assert settled <= at_pause + 2, "more sends than the two in flight finished after the pause"
        assert settled < 40 and _by_status(cid)["queued"] == 40 - settled
        assert campaign_report(cid)["status"] == "paused"

        lifecycle.resume(cid)
        wait_for(lambda: campaign_report(cid)["status"] == "completed", timeout=90,
                 message="the campaign to complete")
    finally:
        emulator.set_knobs(Knobs())
    sent = _sent_refs(emulator, ours)
    assert set(sent) == ours
    assert set(sent.values()) == {1}, "a recipient was sent twice"


def test_cancel_turns_queued_messages_cancelled_over_http(services, api_server, api_headers):
    phones = numbers(5)
    cid = stored_campaign([{"to": phones[0], "callback_url": "https://example.com/r"}, *phones[1:]],
                          callback_url="https://example.com/c")
    url = f"{api_server.url}/v1/campaigns/{cid}"
    paused = httpx.post(f"{url}/pause", headers=api_headers, timeout=10)
    assert paused.status_code == 200 and paused.json()["status"] == "paused"

    cancelled = httpx.post(f"{url}/cancel", headers=api_headers, timeout=10).json()

    assert cancelled["status"] == "cancelled"
    assert cancelled["counts"]["cancelled"] == 5 and cancelled["final"] == 5
    again = httpx.post(f"{url}/resume", headers=api_headers, timeout=10)
    assert again.status_code == 409 and "cannot resume a cancelled campaign" in again.text
    with pytest.raises(InvalidTransition):
        lifecycle.pause(cid)
    with db.session() as s:
        queued = sorted(s.execute(select(Callback.kind, Callback.url)).all())
    assert queued == [("campaign", "https://example.com/c"), ("message", "https://example.com/r")]


def test_messages_are_listed_in_keyset_pages_without_numbers(services, api_server, api_headers):
    cid = stored_campaign(numbers(7))
    url = f"{api_server.url}/v1/campaigns/{cid}/messages"
    seen, after = [], 0
    while after is not None:
        page = httpx.get(url, params={"after": after, "limit": 3}, headers=api_headers, timeout=10).json()
        assert len(page["messages"]) <= 3
        seen += page["messages"]
        after = page["next_after"]
    assert len(seen) == 7 and len({m["id"] for m in seen}) == 7
    assert [m["id"] for m in seen] == sorted(m["id"] for m in seen)
    assert all("phone" not in m and m["status"] == "queued" for m in seen)


def test_messages_without_a_final_report_expire_after_the_validity(services):
    cid = stored_campaign(numbers(3))
    first, second, third = mark_sent(cid)
    with db.session() as s:
        s.execute(update(Message).where(Message.id == third).values(sent_at=SENT_AT + timedelta(hours=47)))
    clock.set_clock(lambda: SENT_AT + timedelta(hours=48, seconds=1))
    try:
        assert lifecycle.expire_overdue() == 2
        assert lifecycle.expire_overdue() == 0
    finally:
        clock.set_clock(None)
    counts = _by_status(cid)
    assert counts == Counter({"expired": 2, "sent": 1})


def test_cli_status_and_pause(services):
    from click.testing import CliRunner

    from worker.cli import main

    cid = str(stored_campaign(numbers(2)))
    runner = CliRunner()
    shown = runner.invoke(main, ["status", cid, "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["counts"]["queued"] == 2
    assert f"campaign {cid} paused" in runner.invoke(main, ["pause", cid]).output
    table = runner.invoke(main, ["status", cid])
    assert table.exit_code == 0 and "paused" in table.output
    assert "cancelled" in runner.invoke(main, ["cancel", cid]).output
    watched = runner.invoke(main, ["status", cid, "--watch", "--json"])
    assert watched.exit_code == 0 and '"status": "cancelled"' in watched.output
    refused = runner.invoke(main, ["resume", str(uuid.uuid4())])
    assert refused.exit_code == 1 and "no campaign" in refused.output
