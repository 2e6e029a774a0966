"""Herald's own periodic jobs (see scheduler/periodic.py for the pattern each one follows)."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from campaigns import callbacks, db, lifecycle
from campaigns.models import Campaign
from campaigns.reports import close_if_finished
from campaigns.settings import get_settings
from campaigns.statuses import CampaignStatus
from scheduler import release
from scheduler.periodic import periodic_task
from scheduler.sweep import sweep as run_sweep
from worker import queues, tasks
from worker.app import app


@periodic_task("herald.release_due_campaigns")
def release_due_campaigns() -> int:
    return len(release.release_due_campaigns(tasks.fan_out.delay))


@periodic_task("herald.release_deferred_recipients")
def release_deferred_recipients() -> int:
    return release.release_deferred(tasks.publish_sends, get_settings().fanout_batch)


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
    """Republish lost sends, restart stalled fan-outs, settle stale claims (scheduler/sweep.py)."""
    result = run_sweep(tasks.publish_sends, tasks.fan_out.delay, backlog=send_backlog)
    return {"republished": result.republished, "fanouts": result.fanouts, "resolved": dict(result.resolved)}


def send_backlog() -> int:
    """Send tasks waiting in the broker's send queues (not those already taken by a worker)."""
    with app.connection_for_read() as conn:
        return sum(queues.depth(conn, queue) for queue in queues.SEND_QUEUES.values())


@periodic_task("herald.deliver_callbacks")
def deliver_callbacks(limit: int = 200) -> int:
    with httpx.Client(timeout=10, follow_redirects=False) as client:
        return callbacks.deliver_due(client, limit)


@periodic_task("herald.expire_messages")
def expire_messages() -> int:
    return lifecycle.expire_overdue()
