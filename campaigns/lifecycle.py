"""Steering a campaign: pause, resume, cancel; and message expiry.

Each transition is one conditional UPDATE on the campaign row, so concurrent callers agree on
one outcome. Pausing works through the claim (campaigns/messages.py claims only messages of running
campaigns): a send task that arrives while paused does nothing and its message stays `queued`;
resume publishes the queued messages again, and the claim still lets each be sent only once.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from sqlalchemy import select, update

from campaigns import clock, db, messages, ports
from campaigns.callbacks import queue_final_callbacks
from campaigns.errors import InvalidTransition, NotFound
from campaigns.models import Campaign, Message
from campaigns.aggregate import silent_accounts
from campaigns.reports import close_if_finished
from campaigns.settings import get_settings
from campaigns.statuses import CampaignStatus, MessageStatus

log = logging.getLogger(__name__)

# What each action may start from.
_FROM = {
    "pause": (CampaignStatus.RUNNING,),
    "resume": (CampaignStatus.PAUSED,),
    "cancel": (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING, CampaignStatus.PAUSED),
}
_TO = {"pause": CampaignStatus.PAUSED, "resume": CampaignStatus.RUNNING, "cancel": CampaignStatus.CANCELLED}


def _transition(campaign_id: str | uuid.UUID, action: str, **values) -> uuid.UUID:
    cid = uuid.UUID(str(campaign_id))
    with db.session() as s:
        moved = s.execute(
            update(Campaign).where(Campaign.id == cid, Campaign.status.in_(_FROM[action]))
            .values(status=_TO[action], **values)
        ).rowcount
        if not moved:
            status = s.scalar(select(Campaign.status).where(Campaign.id == cid))
            if status is None:
                raise NotFound(f"no campaign {cid}")
            if status == _TO[action]:
                return cid  # already there: repeating an action is harmless
            raise InvalidTransition(f"cannot {action} a {status} campaign")
        if action == "cancel":
            _cancel_queued(s, cid)
    log.info("campaign %s", _TO[action].value, extra={"campaign_id": str(cid)})
    return cid


def pause(campaign_id: str | uuid.UUID) -> None:
    """No send starts after this commits; sends already at the provider finish and record."""
    _transition(campaign_id, "pause")


def resume(campaign_id: str | uuid.UUID) -> None:
    """Continue with the messages still queued; nothing already sent is sent again."""
    cid = _transition(campaign_id, "resume")
    with db.session() as s:
        # Send tasks consumed while paused are gone: fan out the queued messages again.
        s.execute(update(Campaign).where(Campaign.id == cid).values(fanout_checkpoint=0))
    ports.start_dispatch(str(cid))


def cancel(campaign_id: str | uuid.UUID) -> None:
    """Queued messages become `cancelled`; those already at a provider that can cancel are
    cancelled there too (in the background)."""
    cid = _transition(campaign_id, "cancel", completed_at=clock.now())
    ports.cancel_at_provider(str(cid))


def _cancel_queued(s, cid: uuid.UUID) -> None:
    messages.cancel_queued(s, cid)
    queue_final_callbacks(s, cid)


def expire_overdue(batch: int = 5000) -> int:
    """`sent` messages with no final report after the validity become `expired`.

    Silent providers' messages are left `sent`: no report was ever coming, so none is overdue.
    """
    cutoff = clock.now() - timedelta(seconds=get_settings().message_validity_s)
    silent = silent_accounts()
    expired = 0
    while True:
        with db.session() as s:
            query = select(Message.id).where(Message.status == MessageStatus.SENT, Message.sent_at < cutoff)
            if silent:
                query = query.where(Message.provider.not_in(silent))
            ids = list(s.scalars(query.limit(batch)))
            if not ids:
                return expired
            campaigns = messages.expire_overdue(s, ids)
            expired += len(campaigns)
            for cid in set(campaigns):
                close_if_finished(s, cid)
