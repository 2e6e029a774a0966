"""Herald's own periodic jobs (see scheduler/periodic.py for the pattern each one follows)."""

from __future__ import annotations

from amqp.exceptions import ChannelError
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


# A short lock: a sweep killed with its worker must not hold the next ones off for long (two
# sweeps at once are safe anyway; the lock only saves a duplicate scan).
@periodic_task("herald.sweep", lock_ttl_s=10)
def sweep() -> dict:
    """Republish lost sends, restart stalled fan-outs, resolve stale claims (scheduler/sweep.py)."""
    from scheduler.sweep import sweep as run
    from worker.tasks import fan_out, publish_sends

    result = run(publish_sends, fan_out.delay, backlog=send_backlog)
    return {"republished": result.republished, "fanouts": result.fanouts, "resolved": dict(result.resolved)}


def send_backlog() -> int:
    """Send tasks waiting in the broker's `send` queue (not those already taken by a worker)."""
    from worker.app import app

    with app.connection_for_read() as conn:
        try:
            return conn.default_channel.queue_declare("send", passive=True).message_count
        except ChannelError:  # the queue does not exist: nothing was ever left in it
            return 0
