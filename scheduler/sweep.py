"""The sweeper: republish what was committed but never published, resolve claims gone stale.

Safe to run twice at once (two beats, or a beat and a manual run): every change is one
conditional UPDATE that re-checks what it saw, and only the run whose UPDATE matched publishes.

- A queued message of a running campaign whose task should have run ``republish_after_s`` ago
  (its retry was due, or fan-out published it), while no send task waits in the broker, lost its
  task (a worker killed with the message prefetched, a Redis restart): it is published again.
  A duplicate is harmless: the claim dedups.
- A running campaign whose fan-out stopped moving with messages past its checkpoint gets its
  fan-out started again; it resumes from the checkpoint.
- A ``sending`` message claimed more than ``stale_claim_s`` ago lost its worker mid-send. The
  provider is asked by Herald's reference where the adapter can (``fetch_by_reference``); the
  answer settles it (sent or final, or safe to send again if the provider never got it). Where
  nobody can be asked, ``stale_claim_policy`` decides: ``unknown`` (default: never resend blindly) or
  ``resend`` (at least once). A message whose worker was lost ``max_deliveries`` times ends
  ``failed``: it is taken for a poison message that kills whoever sends it.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, func, or_, select, update

from campaigns import db
from campaigns.clock import now
from campaigns.errors import ProviderError
from campaigns.models import Campaign, Message
from campaigns.reports import StatusReport
from campaigns.settings import Settings, get_settings
from campaigns.statuses import FINAL, CampaignStatus, MessageStatus

log = logging.getLogger(__name__)

BATCH = 1000
# A lookup that keeps failing is given this many stale periods before the fallback policy applies.
LOOKUP_PATIENCE = 4


@dataclass(frozen=True)
class Resolution:
    """What becomes of one stale claim."""

    action: str  # "report" | "requeue" | "fail" | "unknown" | "wait"
    reason: str
    report: StatusReport | None = None


NOT_ASKED = object()  # the provider could not be asked (no lookup, or the lookup failed)


def resolve(found, *, policy: str, attempts: int, max_deliveries: int, patient: bool) -> Resolution:
    """Decide a stale claim from what the provider said (pure; ``found`` is a report, None or NOT_ASKED).

    ``found`` None means the provider answered that it never got the message; ``patient`` is
    whether a failed lookup may still be retried before falling back to the policy.
    """
    if isinstance(found, StatusReport):
        return Resolution("report", "the provider has it", found)
    if found is NOT_ASKED and patient:
        return Resolution("wait", "the provider could not be asked yet")
    if found is NOT_ASKED and policy != "resend":
        return Resolution("unknown", "the worker was lost mid-send and the provider cannot be asked")
    if attempts >= max_deliveries:
        return Resolution("fail", f"the worker was lost {attempts} times while sending it (poison message)")
    why = "the provider never got it" if found is None else "resend policy"
    return Resolution("requeue", f"the worker was lost mid-send; {why}")


@dataclass
class SweepResult:
    republished: int = 0
    fanouts: int = 0
    resolved: Counter | None = None


def sweep(publish_sends: Callable[[list[int]], None], publish_fan_out: Callable[[str], None],
          settings: Settings | None = None, backlog: Callable[[], int] | None = None) -> SweepResult:
    """``backlog`` counts send tasks waiting in the broker: while any wait, none is taken for lost
    (a slow queue is not a lost one, and republishing into it would only make it longer)."""
    settings = settings or get_settings()
    result = SweepResult(resolved=Counter())
    waiting = backlog() if backlog else 0
    with db.session() as s:
        campaigns = s.execute(
            select(Campaign.id, Campaign.status, Campaign.provider, Campaign.fanout_checkpoint,
                   func.coalesce(Campaign.fanout_at, Campaign.started_at, Campaign.created_at))
            .where(Campaign.status.in_([CampaignStatus.RUNNING, CampaignStatus.PAUSED]))
        ).all()
    for cid, status, provider, checkpoint, published_at in campaigns:
        if status == CampaignStatus.RUNNING and not waiting:
            result.republished += _republish(cid, checkpoint, published_at, settings, publish_sends)
            if _restart_stalled_fan_out(cid, settings):
                publish_fan_out(str(cid))
                result.fanouts += 1
        result.resolved.update(_resolve_stale(cid, provider, settings, publish_sends))
    if result.republished or result.fanouts or result.resolved:
        log.info("sweep", extra={"republished": result.republished, "fanouts": result.fanouts,
                                 "resolved": dict(result.resolved)})
    return result


def _republish(cid: uuid.UUID, checkpoint: int, published_at: datetime, settings: Settings,
               publish: Callable[[list[int]], None]) -> int:
    t = now()
    cutoff = t - timedelta(seconds=settings.republish_after_s)
    lost = (Message.campaign_id == cid, Message.status == MessageStatus.QUEUED,
            Message.id <= checkpoint, func.coalesce(Message.due_at, published_at) < cutoff,
            # Waiting for its send window is not lost; once due, the window release publishes it.
            or_(Message.not_before.is_(None), Message.not_before < cutoff))
    total = 0
    while True:
        with db.session() as s:
            # Re-checked row by row: of two sweeps at once, only one takes each message.
            ids = list(s.scalars(
                update(Message)
                .where(Message.id.in_(select(Message.id).where(*lost).order_by(Message.id).limit(BATCH)), *lost)
                .values(due_at=t).returning(Message.id)
            ))
        if not ids:
            return total
        publish(sorted(ids))
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


def _lookup(account: str, reference: str):
    """Ask the provider about Herald's reference: a report, None (it never got it) or NOT_ASKED."""
    from worker.providers import get_provider

    provider = get_provider(account)
    # The adapter contract's optional capability: announced by a flag, asked by Herald's own id.
    if not getattr(provider, "lookup_by_reference", False):
        return NOT_ASKED
    try:
        return provider.fetch_by_reference(reference)
    except ProviderError as exc:
        log.warning("stale claim lookup failed", extra={"message_id": reference, "error": type(exc).__name__})
        return NOT_ASKED


def _resolve_stale(cid: uuid.UUID, campaign_provider: str | None, settings: Settings,
                   publish: Callable[[list[int]], None]) -> Counter:
    t = now()
    cutoff = t - timedelta(seconds=settings.stale_claim_s)
    patience = t - timedelta(seconds=settings.stale_claim_s * LOOKUP_PATIENCE)
    with db.session() as s:
        stale = s.execute(
            select(Message.id, Message.provider, Message.attempts, Message.claimed_at)
            .where(Message.campaign_id == cid, Message.status == MessageStatus.SENDING,
                   Message.claimed_at < cutoff)
            .order_by(Message.id).limit(BATCH)
        ).all()
    done: Counter = Counter()
    requeued: list[int] = []
    for row in stale:
        found = _lookup(row.provider or settings.provider(campaign_provider)[0], str(row.id))
        decision = resolve(found, policy=settings.stale_claim_policy, attempts=row.attempts,
                           max_deliveries=settings.max_deliveries, patient=row.claimed_at >= patience)
        if decision.action == "wait":
            continue
        if _apply(row.id, row.claimed_at, decision, t):
            done[decision.action] += 1
            if decision.action == "requeue":
                requeued.append(row.id)
            log.warning("stale claim resolved", extra={"campaign_id": str(cid), "message_id": row.id,
                                                       "action": decision.action, "reason": decision.reason})
    if requeued:
        publish(requeued)
    return done


def _apply(message_id: int, claimed_at: datetime, decision: Resolution, t: datetime) -> bool:
    values: dict = {"error": decision.reason}
    if decision.action == "requeue":
        values.update(status=MessageStatus.QUEUED, claimed_at=None, due_at=t)
    elif decision.action == "fail":
        values.update(status=MessageStatus.FAILED, final_at=t)
    elif decision.action == "unknown":
        values.update(status=MessageStatus.UNKNOWN, final_at=t)
    else:
        report = decision.report
        status = report.status if report.status in FINAL else MessageStatus.SENT
        values.update(status=status, raw_status=report.raw_status,
                      provider_message_id=report.provider_message_id, sent_at=report.at or t, error=None)
        if status in FINAL:
            values["final_at"] = report.at or t
        if report.cost is not None:
            values["cost"] = report.cost
    with db.session() as s:
        # Only if it is still the claim we saw: a late answer or another sweep may have settled it.
        return s.execute(
            update(Message).where(Message.id == message_id, Message.status == MessageStatus.SENDING,
                                  Message.claimed_at == claimed_at).values(**values)
        ).rowcount == 1
