"""Holding and releasing work by time: due scheduled campaigns, and recipients outside their window.

A message waiting for its send window is ``queued`` with ``not_before`` set; nothing publishes it
until ``release_deferred`` finds it due, publishes it and clears ``not_before``. The send path
checks the window again when it claims a message, so a backlog never sends outside the window.
Every write is conditional, so two runs at once (two beats) do the work once between them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select, update

from campaigns import clock, db
from campaigns.models import Campaign, Message
from campaigns.statuses import CampaignStatus, MessageStatus
from scheduler.windows import Window, is_open, next_open, zones_for

log = logging.getLogger(__name__)

NEVER_OPEN = "the send window is never open in all of this number's time zones"


def release_due_campaigns(start: Callable[[str], None], now: datetime | None = None) -> list[str]:
    """Move scheduled campaigns whose time has come to running and start each one; returns their ids."""
    now = now or clock.now()
    with db.session() as s:
        ids = list(s.scalars(
            update(Campaign)
            .where(Campaign.status == CampaignStatus.SCHEDULED, Campaign.scheduled_at <= now)
            .values(status=CampaignStatus.RUNNING, started_at=now)
            .returning(Campaign.id)
            .execution_options(synchronize_session=False)
        ))
    # Only the run whose UPDATE moved a campaign starts it. A crash right here leaves it running
    # without a fan-out; see the README's scheduler section.
    for cid in ids:
        log.info("scheduled campaign released", extra={"campaign_id": str(cid)})
        start(str(cid))
    return [str(cid) for cid in ids]


def release_deferred(publish: Callable[[list[int]], None], batch: int, now: datetime | None = None) -> int:
    """Publish every waiting message whose ``not_before`` has come; returns how many."""
    now = now or clock.now()
    released = 0
    while True:
        with db.session() as s:
            # Locked rows belong to a concurrent run: skip them. Publishing happens before the
            # commit, so a crash republishes (the claim dedups) rather than losing a message.
            ids = list(s.scalars(
                select(Message.id).join(Campaign, Campaign.id == Message.campaign_id)
                .where(Message.status == MessageStatus.QUEUED, Message.not_before <= now,
                       Campaign.status == CampaignStatus.RUNNING)
                .order_by(Message.not_before).limit(batch)
                .with_for_update(of=Message, skip_locked=True)
            ))
            if not ids:
                return released
            publish(ids)
            s.execute(update(Message).where(Message.id.in_(ids)).values(not_before=None)
                      .execution_options(synchronize_session=False))
        released += len(ids)


def hold_outside_window(window: dict, ids: list[int], now: datetime | None = None) -> list[int]:
    """Fan-out's filter: of ``ids``, return those open now; the others wait with ``not_before`` set."""
    now = now or clock.now()
    spec = Window.from_dict(window)
    with db.session() as s:
        by_zones: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for mid, phone in s.execute(select(Message.id, Message.phone).where(Message.id.in_(ids))):
            by_zones[zones_for(phone, spec)].append(mid)
        due: list[int] = []
        for zones, group in by_zones.items():
            at = next_open(spec, zones, now)
            if at is not None and at <= now:
                due.extend(group)
                continue
            _wait_or_fail(s, group, at, MessageStatus.QUEUED, now)
    return sorted(due)


def defer_if_closed(message_id: int, phone: str, window: dict, now: datetime | None = None) -> bool:
    """The send path's check after a claim: if the window is closed, hand the message back to wait."""
    now = now or clock.now()
    spec = Window.from_dict(window)
    zones = zones_for(phone, spec)
    if is_open(spec, zones, now):
        return False
    with db.session() as s:
        _wait_or_fail(s, [message_id], next_open(spec, zones, now), MessageStatus.SENDING, now)
    return True


def _wait_or_fail(s, ids: list[int], at: datetime | None, status: MessageStatus, now: datetime) -> None:
    held = update(Message).where(Message.id.in_(ids), Message.status == status)
    if at is None:
        s.execute(held.values(status=MessageStatus.FAILED, error=NEVER_OPEN, final_at=now))
        return
    values = {"status": MessageStatus.QUEUED, "not_before": at}
    if status == MessageStatus.SENDING:
        # Give the claim back: this was no send attempt.
        values |= {"claimed_at": None, "attempts": Message.attempts - 1}
    s.execute(held.values(**values))
