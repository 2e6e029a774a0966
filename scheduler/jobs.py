"""Periodic jobs. Each is one idempotent statement or loop of them, safe under two beats."""

from __future__ import annotations

from sqlalchemy import select

from campaigns import db
from campaigns.models import Campaign
from campaigns.reports import close_if_finished
from campaigns.statuses import CampaignStatus
from worker.app import app


def close_finished_campaigns() -> int:
    with db.session() as s:
        running = list(s.scalars(select(Campaign.id).where(Campaign.status == CampaignStatus.RUNNING)))
        return sum(close_if_finished(s, cid) for cid in running)


@app.task(name="herald.close_finished_campaigns")
def close_finished_campaigns_task() -> int:
    return close_finished_campaigns()
