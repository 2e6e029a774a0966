"""Releasing work by time: due scheduled campaigns, and recipients whose send window opened.

A message waiting for its send window is ``queued`` with ``not_before`` set (campaigns/windows.py);
nothing publishes it until ``release_deferred`` finds it due, publishes it and clears
``not_before``. The send path checks the window again when it claims a message, so a backlog
never sends outside the window.
Every write is conditional, so two runs at once (two beats) do the work once between them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select, update

from campaigns import clock, db, messages
from campaigns.models import Campaign, Message
from campaigns.statuses import CampaignStatus, MessageStatus

log = logging.getLogger(__name__)


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
            messages.release_held(s, ids)
        released += len(ids)
