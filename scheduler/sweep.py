"""The sweeper: republish what was committed but never published, resolve claims gone stale.

Safe to run twice at once (two beats, or a beat and a manual run): every change is one
conditional UPDATE that re-checks what it saw, and only the run whose UPDATE matched publishes.

- A queued message of a running campaign whose task should have run ``republish_after_s`` ago
  (its retry was due, or fan-out published it), while no send task waits in the broker, lost its
  task (a worker killed with the message prefetched, a Redis restart): it is published again.
  A duplicate is harmless: the claim dedups.
- A running campaign whose fan-out stopped moving with messages past its checkpoint gets its
  fan-out started again; it resumes from the checkpoint.
- A ``sending`` message claimed more than ``stale_claim_s`` ago lost its worker mid-send: it is
  settled as any send in doubt is (worker/send/settle.py): by asking the provider where it can
  be asked, else by ``stale_claim_policy``. A message whose worker was lost ``max_deliveries``
  times ends ``failed``: it is taken for a poison message that kills whoever sends it.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, func, select, update

from campaigns import db, messages
from campaigns.clock import now
from campaigns.models import Campaign, Message
from campaigns.settings import Settings, get_settings
from campaigns.statuses import CampaignStatus, MessageStatus
from worker import queues
from worker.send import settle

log = logging.getLogger(__name__)

BATCH = 1000


@dataclass
class SweepResult:
    republished: int = 0
    fanouts: int = 0
    resolved: Counter | None = None


def sweep(publish_sends: Callable[..., None], publish_fan_out: Callable[[str], None],
          settings: Settings | None = None, backlog: Callable[[], int] | None = None) -> SweepResult:
    """``backlog`` counts send tasks waiting in the broker: while any wait, none is taken for lost
    (a slow queue is not a lost one, and republishing into it would only make it longer)."""
    settings = settings or get_settings()
    result = SweepResult(resolved=Counter())
    waiting = backlog() if backlog else 0
    with db.session() as s:
        campaigns = s.execute(
            select(Campaign.id, Campaign.status, Campaign.provider, Campaign.fanout_checkpoint,
                   func.coalesce(Campaign.fanout_at, Campaign.started_at, Campaign.created_at),
                   Campaign.priority)
            .where(Campaign.status.in_([CampaignStatus.RUNNING, CampaignStatus.PAUSED]))
        ).all()
    for cid, status, provider, checkpoint, published_at, priority in campaigns:
        if status == CampaignStatus.RUNNING and not waiting:
            result.republished += _republish(cid, checkpoint, published_at, settings,
                                             lambda ids: publish_sends(ids, queues.send_queue(priority)))
            if _restart_stalled_fan_out(cid, settings):
                publish_fan_out(str(cid))
                result.fanouts += 1
        account = provider if provider in settings.providers else None  # a route names no account
        result.resolved.update(settle.settle_stale(cid, account, settings, publish_sends))
    if result.republished or result.fanouts or result.resolved:
        log.info("sweep", extra={"republished": result.republished, "fanouts": result.fanouts,
                                 "resolved": dict(result.resolved)})
    return result


def _republish(cid: uuid.UUID, checkpoint: int, published_at: datetime, settings: Settings,
               publish: Callable[[list[int]], None]) -> int:
    cutoff = now() - timedelta(seconds=settings.republish_after_s)
    total = 0
    while True:
        ids = messages.republish_lost(cid, checkpoint, published_at, cutoff, BATCH)
        if not ids:
            return total
        publish(ids)
        total += len(ids)
        log.warning("republished lost sends", extra={"campaign_id": str(cid), "count": len(ids)})


def _restart_stalled_fan_out(cid: uuid.UUID, settings: Settings) -> bool:
    cutoff = now() - timedelta(seconds=settings.republish_after_s)
    unpublished = exists().where(Message.campaign_id == cid, Message.status == MessageStatus.QUEUED,
                                 Message.id > Campaign.fanout_checkpoint)
    with db.session() as s:
        taken = s.execute(
            update(Campaign)
            .where(Campaign.id == cid, Campaign.status == CampaignStatus.RUNNING,
                   func.coalesce(Campaign.fanout_at, Campaign.started_at, Campaign.created_at) < cutoff,
                   unpublished)
            .values(fanout_at=now())
        ).rowcount
    if taken:
        log.warning("fan-out stalled; restarted from its checkpoint", extra={"campaign_id": str(cid)})
    return taken == 1
