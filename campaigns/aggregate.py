"""The exact per-campaign report, counted from message rows in two queries, and what still counts
as awaiting an outcome.

One grouped query (provider × country × status) gives counts, segments and cost, from which the
totals and both breakdowns are summed; a second gives time-to-delivery percentiles.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from campaigns import db, pacing, ports
from campaigns.clock import now
from campaigns.errors import NotFound
from campaigns.models import Campaign, Message, Rejection
from campaigns.settings import get_settings
from campaigns.statuses import FINAL, PENDING, CampaignStatus, MessageStatus

# Everything the provider took: sent now, or sent and since reported on.
_TAKEN = ("sent", "delivered", "failed", "expired")


def _blank() -> dict[str, Any]:
    return {"counts": {st.value: 0 for st in MessageStatus}, "no_report": 0,
            "segments": 0, "cost": Decimal(0), "priced": False}


def _summarise(group: dict[str, Any]) -> dict[str, Any]:
    counts = group["counts"]
    accepted = sum(counts.values())
    delivered = counts[MessageStatus.DELIVERED]
    no_report = group["no_report"]
    final = sum(counts[st] for st in FINAL)
    # Messages through a provider that never reports are neither delivered nor failed: the rate
    # is over the messages whose outcome can be known.
    knowable = accepted - no_report
    return {
        "accepted": accepted,
        "counts": counts,
        "sent": sum(counts[st] for st in _TAKEN),
        "delivered": delivered,
        "failed": counts[MessageStatus.FAILED],
        "no_report": no_report,
        "final": final,
        # Final, or sent through a provider that will never say more: nothing left to wait for.
        "done": final + no_report,
        "pending": accepted - final - no_report,
        "delivery_rate": round(delivered / knowable, 4) if knowable else 0.0,
        "segments": group["segments"],
        "cost": str(group["cost"]) if group["priced"] else None,
    }


def _add(group: dict[str, Any], status: str, silent: bool, n: int, segments: int, cost) -> None:
    group["counts"][status] = group["counts"].get(status, 0) + n
    if silent and status == MessageStatus.SENT:
        group["no_report"] += n
    group["segments"] += int(segments or 0)
    if cost is not None:
        group["cost"] += Decimal(cost)
        group["priced"] = True


def aggregate(s: Session, campaign_id: uuid.UUID, silent_accounts: set[str]) -> dict[str, Any]:
    rows = s.execute(
        select(Message.provider, Message.region, Message.status, func.count(),
               func.coalesce(func.sum(Message.segments), 0), func.sum(Message.cost))
        .where(Message.campaign_id == campaign_id)
        .group_by(Message.provider, Message.region, Message.status)
    ).all()
    total = _blank()
    by_provider: dict[str, dict[str, Any]] = {}
    by_country: dict[str, dict[str, Any]] = {}
    for provider, region, status, n, segments, cost in rows:
        silent = provider in silent_accounts
        for group in (total, by_provider.setdefault(provider or "none", _blank()),
                      by_country.setdefault(region or "unknown", _blank())):
            _add(group, status, silent, n, segments, cost)
    return {
        **_summarise(total),
        "time_to_delivery_s": time_to_delivery(s, campaign_id),
        "by_provider": {k: _summarise(v) for k, v in sorted(by_provider.items())},
        "by_country": {k: _summarise(v) for k, v in sorted(by_country.items())},
    }


def time_to_delivery(s: Session, campaign_id: uuid.UUID) -> dict[str, float | None]:
    """p50 and p95 seconds from `sent` to `delivered`, over delivered messages.

    Providers stamp delivery with their own clock, often to the second, so a fast delivery can
    appear to precede our `sent_at`: those count as 0, never negative.
    """
    delivered = (Message.campaign_id == campaign_id, Message.status == MessageStatus.DELIVERED,
                 Message.sent_at.is_not(None), Message.final_at.is_not(None))
    if s.bind.dialect.name == "postgresql":
        seconds = func.greatest(func.extract("epoch", Message.final_at - Message.sent_at), 0)
        p50, p95 = s.execute(select(
            func.percentile_cont(0.5).within_group(seconds),
            func.percentile_cont(0.95).within_group(seconds),
        ).where(*delivered)).one()
        return {"p50": _round(p50), "p95": _round(p95)}
    durations = sorted(
        max((final - sent).total_seconds(), 0.0)
        for sent, final in s.execute(select(Message.sent_at, Message.final_at).where(*delivered))
    )
    return {"p50": _round(percentile(durations, 0.5)), "p95": _round(percentile(durations, 0.95))}


def percentile(ordered: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks, as PostgreSQL's percentile_cont."""
    if not ordered:
        return None
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _round(value: Any) -> float | None:
    return round(float(value), 3) if value is not None else None


def silent_accounts() -> set[str]:
    """Configured accounts whose provider never reports after accepting (the Laravel gateway).

    Their messages stay `sent` and count as "no report available": done, not pending, not failed.
    """
    return {name for name, account in get_settings().providers.items()
            if ports.capabilities(account.kind).silent}


def awaiting_outcome(silent: set[str] | None = None):
    """SQL condition: this message can still change (pending, and not a silent provider's `sent`)."""
    silent = silent_accounts() if silent is None else silent
    pending = Message.status.in_([p.value for p in PENDING])
    if not silent:
        return pending
    return and_(pending, ~and_(Message.status == MessageStatus.SENT, Message.provider.in_(silent)))


def campaign_report(campaign_id: str | uuid.UUID) -> dict[str, Any]:
    """The exact aggregate, counted from the message and rejection rows."""
    cid = uuid.UUID(str(campaign_id))
    with db.session() as s:
        campaign = s.get(Campaign, cid)
        if campaign is None:
            raise NotFound(f"no campaign {cid}")
        rejected = dict(
            s.execute(
                select(Rejection.kind, func.count()).where(Rejection.campaign_id == cid)
                .group_by(Rejection.kind)
            ).all()
        )
        body = aggregate(s, cid, silent_accounts())
        window = pacing.window_report(s, campaign)
        moved = movement(s, [cid]).get(cid)
    return {
        "campaign_id": str(cid),
        "status": campaign.status,
        "submitted": campaign.submitted,
        "duplicates": rejected.get("duplicate", 0),
        "invalid": rejected.get("invalid", 0),
        "suppressed": rejected.get("suppressed", 0),
        **body,
        "priority": campaign.priority,
        "window": window,
        "estimated_cost": str(campaign.estimated_cost) if campaign.estimated_cost is not None else None,
        "created_at": campaign.created_at.isoformat() if campaign.created_at else None,
        "started_at": campaign.started_at.isoformat() if campaign.started_at else None,
        "completed_at": campaign.completed_at.isoformat() if campaign.completed_at else None,
        "last_moved_at": moved.last_moved_at.isoformat() if moved and moved.last_moved_at else None,
        "stalled": bool(moved and moved.stalled),
    }


class Movement:
    """When a running campaign's messages last moved (claimed, sent or final), and whether it stalled."""

    def __init__(self, last_moved_at: datetime | None, stalled: bool):
        self.last_moved_at, self.stalled = last_moved_at, stalled


def is_stalled(moments: list[datetime | None], pending: int, held_until: datetime | None, at: datetime,
               after_s: float) -> bool:
    """A campaign stalled: it has messages to send, none is held for its send window, and nothing
    (its start, a claim, a send, a final status: ``moments``) happened for ``after_s``. Pure."""
    known = [_aware(m) for m in moments if m is not None]
    if not pending or not known or (held_until is not None and _aware(held_until) > at):
        return False
    return (at - max(known)).total_seconds() > after_s


def movement(s: Session, campaign_ids: list[uuid.UUID] | None = None) -> dict[uuid.UUID, Movement]:
    """The running campaigns' (all, or those of ``campaign_ids``) last movement: one grouped query."""
    pending = Message.status.in_([MessageStatus.QUEUED.value, MessageStatus.SENDING.value])
    query = (select(Campaign.id, Campaign.started_at, func.max(Message.claimed_at), func.max(Message.sent_at),
                    func.max(Message.final_at), func.count().filter(pending), func.max(Message.not_before))
             .join(Message, Message.campaign_id == Campaign.id)
             .where(Campaign.status == CampaignStatus.RUNNING).group_by(Campaign.id, Campaign.started_at))
    if campaign_ids is not None:
        query = query.where(Campaign.id.in_(campaign_ids))
    at, after_s = now(), get_settings().stalled_after_s
    found = {}
    for cid, started, claimed, sent, final, waiting, held in s.execute(query):
        moments = [started, claimed, sent, final]
        last = max((_aware(m) for m in moments if m is not None), default=None)
        found[cid] = Movement(last, is_stalled(moments, waiting, held, at, after_s))
    return found


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)  # SQLite drops the zone
