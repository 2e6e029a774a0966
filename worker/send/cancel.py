"""Cancelling a cancelled campaign's sent messages at the providers that can cancel."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import select

from campaigns import db, messages
from campaigns.callbacks import queue_final_callbacks
from campaigns.errors import ProviderError
from campaigns.models import Message
from campaigns.statuses import MessageStatus
from worker.providers import get_provider

log = logging.getLogger(__name__)


def cancel_sent(campaign_id: str, batch: int = 500) -> int:
    """Ask the provider to cancel each `sent` message of a cancelled campaign; returns how many it did."""
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
                with db.session() as s:
                    queue_final_callbacks(s, cid)  # tell the recipients cancelled just now
            return cancelled
        after = rows[-1].id
        for row in rows:
            try:
                # Adapters without a provider-side cancel answer False without a request.
                if not get_provider(row.provider).cancel(row.provider_message_id):
                    continue  # already left the provider
            except ProviderError:
                log.warning("provider cancel failed", extra={"campaign_id": campaign_id, "message_id": row.id},
                            exc_info=True)
                continue
            cancelled += messages.cancel_sent(row.id)
