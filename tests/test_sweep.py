"""The sweeper against the real PostgreSQL: lost sends, stalled fan-outs, stale claims, poison."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from campaigns import clock, db, intake, messages
from campaigns.models import Campaign, Message
from campaigns.reports import StatusReport
from campaigns.schema import CampaignSpec
from campaigns.settings import get_settings
from campaigns.statuses import MessageStatus
from scheduler.sweep import sweep
from worker.send import settle
from worker.send.settle import decide

NUMBERS = ["+447400123401", "+447400123402", "+447400123403", "+447400123404"]


@pytest.mark.parametrize("found, policy, attempts, patient, action", [
    (StatusReport("DELIVRD", MessageStatus.DELIVERED), "unknown", 1, False, "report"),
    # None: nothing names the message (not asked, the lookup failed, or not found: no proof of absence)
    (None, "unknown", 1, False, "unknown"),          # never resend blindly
    (None, "unknown", 3, False, "unknown"),
    (None, "unknown", 1, True, "wait"),              # a report or another lookup may still show it
    (None, "resend", 1, False, "requeue"),           # the operator chose at least once
    (None, "resend", 3, False, "fail"),              # ...but workers keep dying on it: poison
])
def test_stale_claim_rules(found, policy, attempts, patient, action):
    decision = decide(found, policy=policy, attempts=attempts, max_deliveries=3, patient=patient)
    assert decision.action == action
    assert decision.reason


@pytest.fixture
def campaign(services):
    spec = CampaignSpec.model_validate({"from": "Herald", "message": "hi", "default_region": "GB"})
    receipt = intake.submit(spec, NUMBERS)  # stored, not yet fanned out
    with db.session() as s:
        ids = list(s.scalars(select(Message.id).where(Message.campaign_id == receipt.campaign_id)
                             .order_by(Message.id)))
    return receipt.campaign_id, ids


class Published:
    def __init__(self):
        self.sends: list[int] = []
        self.fan_outs: list[str] = []
        self.lock = threading.Lock()

    def sweep(self, backlog=None, **overrides):
        def sends(ids, queue=None):
            with self.lock:
                self.sends.extend(ids)

        return sweep(sends, self.fan_outs.append, get_settings().model_copy(update=overrides), backlog)


def make_stale(message_id: int, ago_s: float = 3600) -> None:
    with db.session() as s:
        s.execute(update(Message).where(Message.id == message_id)
                  .values(claimed_at=clock.now() - timedelta(seconds=ago_s)))


def row(message_id: int) -> Message:
    with db.session() as s:
        return s.get(Message, message_id)


def test_a_claim_whose_answer_was_lost_is_found_by_its_own_stamp(campaign):
    # What a send whose claim lost its connection asks once the database is back: its claim made
    # again, or found as its own (committed, the answer lost), never another delivery's.
    _, ids = campaign
    ts = clock.now()
    assert messages.claim(ids[0], ts) is not None
    assert messages.claim(ids[0], ts) is None  # claimed: the claim is not made twice
    assert messages.own_claim(ids[0], ts).id == ids[0]
    assert messages.own_claim(ids[0], ts + timedelta(microseconds=1)) is None  # another claim's
    assert messages.own_claim(ids[1], ts) is None  # still queued: to be claimed, not found
    messages.record_sent(ids[0], "tiko", "p1", "sent", None)
    assert messages.own_claim(ids[0], ts) is None  # sent: nothing left to send


def test_a_stale_claim_nobody_can_check_becomes_unknown(campaign):
    _, ids = campaign
    assert messages.claim(ids[0]) is not None
    messages.claim(ids[1])  # claimed just now: a live send, left alone
    make_stale(ids[0])
    out = Published()

    result = out.sweep(stale_claim_s=60)

    assert result.resolved == {"unknown": 1}
    assert row(ids[0]).status == MessageStatus.UNKNOWN and "cannot be asked" in row(ids[0]).error
    assert row(ids[1]).status == MessageStatus.SENDING
    assert out.sends == []


def test_a_poison_message_ends_failed_instead_of_looping(campaign):
    # Given the at-least-once policy and a message whose worker dies every time it sends it
    _, ids = campaign
    out = Published()
    for delivery in range(1, 4):
        assert messages.claim(ids[0]) is not None, f"delivery {delivery} could not claim"
        make_stale(ids[0])  # the worker died mid-send
        out.sweep(stale_claim_policy="resend", max_deliveries=3, stale_claim_s=60)
    # then it was sent again twice, and the third loss ends it, with the reason
    assert out.sends == [ids[0], ids[0]]
    final = row(ids[0])
    assert final.status == MessageStatus.FAILED and "poison" in final.error and final.attempts == 3


class LookupProvider:
    """An adapter that can be asked by Herald's reference (the contract's optional capability)."""

    lookup_by_reference = True

    def __init__(self, known: dict[str, StatusReport]):
        self.known = known

    def fetch_by_reference(self, query):
        return self.known.get(query.reference)


def test_a_provider_lookup_settles_stale_claims(campaign, monkeypatch):
    _, ids = campaign
    for message_id in ids[:2]:
        messages.claim(message_id)
        make_stale(message_id)
    provider = LookupProvider(
        {str(ids[0]): StatusReport("DELIVRD", MessageStatus.DELIVERED, provider_message_id="p-1")})
    monkeypatch.setattr(settle, "get_provider", lambda account: provider)
    out = Published()

    result = out.sweep(stale_claim_s=60)

    # The one it does not show is not taken for "never sent": it is never sent again.
    assert result.resolved == {"report": 1, "unknown": 1}
    got = row(ids[0])
    assert (got.status, got.provider_message_id) == (MessageStatus.DELIVERED, "p-1")
    assert row(ids[1]).status == MessageStatus.UNKNOWN and out.sends == []


def test_lost_sends_are_republished_once_by_two_sweeps_at_once(campaign):
    cid, ids = campaign
    long_ago = clock.now() - timedelta(hours=1)
    with db.session() as s:
        s.execute(update(Campaign).where(Campaign.id == cid)
                  .values(fanout_checkpoint=ids[-1], fanout_at=long_ago))
        # One is waiting on a retry that is not due yet: not lost.
        s.execute(update(Message).where(Message.id == ids[3])
                  .values(due_at=clock.now() + timedelta(seconds=30)))
    out = Published()

    sweeps = [threading.Thread(target=out.sweep, kwargs={"republish_after_s": 60}) for _ in range(2)]
    for t in sweeps:
        t.start()
    for t in sweeps:
        t.join()

    assert sorted(out.sends) == ids[:3]
    assert out.fan_outs == []
    assert out.sweep(republish_after_s=60).republished == 0  # just republished: not lost again yet


def test_a_stalled_fan_out_is_restarted_once(campaign):
    cid, ids = campaign
    with db.session() as s:
        s.execute(update(Campaign).where(Campaign.id == cid)
                  .values(fanout_checkpoint=ids[1], fanout_at=clock.now() - timedelta(hours=1)))
    out = Published()

    out.sweep(republish_after_s=60)
    out.sweep(republish_after_s=60)

    assert out.fan_outs == [str(cid)]
    assert sorted(out.sends) == ids[:2]  # published before the crash, never run


def test_nothing_is_taken_for_lost_while_sends_wait_in_the_broker(campaign):
    from scheduler.jobs import send_backlog
    from worker.tasks import publish_sends

    cid, ids = campaign
    with db.session() as s:
        s.execute(update(Campaign).where(Campaign.id == cid)
                  .values(fanout_checkpoint=ids[-1], fanout_at=clock.now() - timedelta(hours=1)))
    assert send_backlog() == 0
    publish_sends(ids[:1])  # no worker runs here: it waits in the real broker
    assert send_backlog() == 1
    out = Published()

    assert out.sweep(republish_after_s=60, backlog=send_backlog).republished == 0
    assert out.sends == []
