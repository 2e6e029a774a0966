"""Herald's own periodic jobs (see scheduler/periodic.py for the pattern each one follows)."""

from __future__ import annotations

from sqlalchemy import select

from campaigns import db
from campaigns.models import Campaign
from campaigns.reports import close_if_finished
from campaigns.settings import get_settings
from campaigns.statuses import CampaignStatus
from scheduler import release
from scheduler.periodic import periodic_task


@periodic_task("herald.release_due_campaigns")
def release_due_campaigns() -> int:
    from worker.dispatch import start_campaign

    return len(release.release_due_campaigns(start_campaign))


@periodic_task("herald.release_deferred_recipients")
def release_deferred_recipients() -> int:
    from worker.tasks import publish_sends

    return release.release_deferred(publish_sends, get_settings().fanout_batch)


@periodic_task("herald.close_finished_campaigns")
def close_finished_campaigns() -> int:
    # close_if_finished is one conditional UPDATE per campaign: only one run completes each.
    with db.session() as s:
        running = list(s.scalars(select(Campaign.id).where(Campaign.status == CampaignStatus.RUNNING)))
        return sum(close_if_finished(s, cid) for cid in running)
