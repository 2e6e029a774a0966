"""Steering a campaign: pause, resume, cancel; and message expiry.

Each transition is one conditional UPDATE on the campaign row, so concurrent callers agree on
one outcome. Pausing works through the claim (worker/dispatch.py takes only messages of running
campaigns): a send task that arrives while paused does nothing and its message stays `queued`;
resume publishes the queued messages again, and the claim still lets each be sent only once.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from sqlalchemy import select, update

from campaigns import clock, db
from campaigns.errors import InvalidTransition, NotFound, ProviderError
from campaigns.models import Campaign, Message
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
    from worker.dispatch import start_campaign

    cid = _transition(campaign_id, "resume")
    with db.session() as s:
        # Send tasks consumed while paused are gone: fan out the queued messages again.
        s.execute(update(Campaign).where(Campaign.id == cid).values(fanout_checkpoint=0))
    start_campaign(str(cid))


def cancel(campaign_id: str | uuid.UUID) -> None:
    """Queued messages become `cancelled`; those already at a provider that can cancel are
    cancelled there too (in the background)."""
    from worker.tasks import cancel_at_provider

    cid = _transition(campaign_id, "cancel", completed_at=clock.now())
    cancel_at_provider.delay(str(cid))


def _cancel_queued(s, cid: uuid.UUID) -> None:
    from campaigns.callbacks import queue_final_callbacks

    s.execute(
        update(Message).where(Message.campaign_id == cid, Message.status == MessageStatus.QUEUED)
        .values(status=MessageStatus.CANCELLED, final_at=clock.now(), error="campaign cancelled")
    )
    queue_final_callbacks(s, cid)


def cancel_at_provider(campaign_id: str, batch: int = 500) -> int:
    """Ask the provider to cancel each `sent` message of a cancelled campaign, where it can."""
    from worker.providers import get_provider

    cid = uuid.UUID(campaign_id)
    cancelled, after = 0, 0
    while True:
        with db.session() as s:
            rows = s.execute(
                select(Message.id, Message.provider, Message.provider_message_id)
                .where(Message.campaign_id == cid, Message.status == MessageStatus.SENT,
                       Message.provider_message_id.is_not(None), Message.id > after)
                .order_by(Message.id).limit(batch)
            ).all()
        if not rows:
            if cancelled:
                from campaigns.callbacks import queue_final_callbacks

                with db.session() as s:
                    queue_final_callbacks(s, cid)  # tell the recipients cancelled just now
            return cancelled
        after = rows[-1].id
        for row in rows:
            # Adapters without a provider-side cancel answer False without a request.
            provider_cancel = getattr(get_provider(row.provider), "cancel", None)
            if provider_cancel is None:
                continue
            try:
                if not provider_cancel(row.provider_message_id):
                    continue  # already left the provider
            except ProviderError:
                log.warning("provider cancel failed", extra={"campaign_id": campaign_id, "message_id": row.id},
                            exc_info=True)
                continue
            with db.session() as s:
                cancelled += s.execute(
                    update(Message).where(Message.id == row.id, Message.status == MessageStatus.SENT)
                    .values(status=MessageStatus.CANCELLED, final_at=clock.now(), error="cancelled at provider")
                ).rowcount


def expire_overdue(batch: int = 5000) -> int:
    """`sent` messages with no final report after the validity become `expired`.

    Silent providers' messages are left `sent`: no report was ever coming, so none is overdue.
    """
    from campaigns.reports import close_if_finished, silent_accounts
    from campaigns.settings import get_settings

    now = clock.now()
    cutoff = now - timedelta(seconds=get_settings().message_validity_s)
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
            rows = s.execute(
                update(Message).where(Message.id.in_(ids), Message.status == MessageStatus.SENT)
                .values(status=MessageStatus.EXPIRED, raw_status="EXPIRED", final_at=now,
                        error="no final report within the validity period")
                .returning(Message.campaign_id)
            ).all()
            expired += len(rows)
            for cid in {r.campaign_id for r in rows}:
                close_if_finished(s, cid)
