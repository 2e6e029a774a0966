"""Fan-out: one send task per queued message of a running campaign, published in batches.

A checkpoint (the last message id published) moves after each batch is published, so a crash
resumes from it and republishes at most one batch; the claim makes a duplicate harmless.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import select, update

from campaigns import db, windows
from campaigns.clock import now
from campaigns.models import Campaign, Message
from campaigns.statuses import CampaignStatus, MessageStatus


def fan_out(campaign_id: str, publish: Callable[[list[int]], None], batch: int) -> int:
    """Publish one send task per queued message after the checkpoint; returns how many."""
    cid = uuid.UUID(campaign_id)
    published = 0
    while True:
        with db.session() as s:
            campaign = s.get(Campaign, cid)
            if campaign is None or campaign.status != CampaignStatus.RUNNING:
                return published
            ids = list(s.scalars(
                select(Message.id)
                .where(Message.campaign_id == cid, Message.id > campaign.fanout_checkpoint,
                       Message.status == MessageStatus.QUEUED)
                .order_by(Message.id).limit(batch)
            ))
        if not ids:
            return published
        due = windows.hold_outside_window(campaign.send_window, ids) if campaign.send_window else ids
        if due:
            publish(due)
        published += len(due)
        # Published before the checkpoint moves: a crash here republishes, and the claim dedups.
        with db.session() as s:
            s.execute(update(Campaign).where(Campaign.id == cid)
                      .values(fanout_checkpoint=ids[-1], fanout_at=now()))
