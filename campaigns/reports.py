"""Delivery reports (applied monotonically) and the exact per-campaign aggregate."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import exists, func, insert, select, update
from sqlalchemy.orm import Session

from campaigns import clock, db
from campaigns.errors import NotFound
from campaigns.models import Campaign, DeliveryReport, Message, Rejection
from campaigns.statuses import FINAL, PENDING, CampaignStatus, MessageStatus, rank

log = logging.getLogger(__name__)


@dataclass
class StatusReport:
    """A provider's word on one message, already mapped by its adapter."""

    raw_status: str
    status: MessageStatus | None  # None: a raw status the adapter does not know; kept, not guessed
    provider_message_id: str | None = None
    message_id: int | None = None  # Herald's own id, where the provider echoes our reference
    cost: Decimal | None = None
    at: datetime | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def apply_report(s: Session, provider: str, report: StatusReport, payload: dict) -> bool:
    """Store the raw report, then move the message forward if the report is news. True if it moved."""
    message_id = report.message_id
    if message_id is None and report.provider_message_id:
        message_id = s.scalar(
            select(Message.id).where(
                Message.provider == provider,
                Message.provider_message_id == report.provider_message_id,
            )
        )
    s.execute(insert(DeliveryReport).values(
        message_id=message_id, provider=provider, provider_message_id=report.provider_message_id,
        raw_status=report.raw_status, status=report.status, payload=payload,
    ))
    if report.status is None:
        log.warning("unmapped provider status kept raw",
                    extra={"provider": provider, "message_id": message_id, "raw_status": report.raw_status})
        return False
    if message_id is None:
        log.warning("report for an unknown message", extra={"provider": provider})
        return False
    lower = [st.value for st in MessageStatus if rank(st) < rank(report.status)]
    values: dict[str, Any] = {"status": report.status, "raw_status": report.raw_status}
    if report.status in FINAL:
        values["final_at"] = report.at or clock.now()
    if report.cost is not None:
        values["cost"] = report.cost
    if report.error:
        values["error"] = report.error
    # One conditional UPDATE: of N concurrent copies of a report, exactly one matches.
    moved = s.execute(
        update(Message).where(Message.id == message_id, Message.status.in_(lower)).values(**values)
    ).rowcount
    return moved == 1


def close_if_finished(s: Session, campaign_id: uuid.UUID) -> bool:
    """Complete a running campaign once none of its messages can still change."""
    pending = exists().where(
        Message.campaign_id == campaign_id, Message.status.in_([p.value for p in PENDING])
    )
    done = s.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.RUNNING, ~pending)
        .values(status=CampaignStatus.COMPLETED, completed_at=clock.now())
    ).rowcount
    return done == 1


def campaign_report(campaign_id: str | uuid.UUID) -> dict[str, Any]:
    """The exact aggregate, counted from the message and rejection rows."""
    cid = uuid.UUID(str(campaign_id))
    with db.session() as s:
        campaign = s.get(Campaign, cid)
        if campaign is None:
            raise NotFound(f"no campaign {cid}")
        by_status = dict(
            s.execute(
                select(Message.status, func.count()).where(Message.campaign_id == cid)
                .group_by(Message.status)
            ).all()
        )
        rejected = dict(
            s.execute(
                select(Rejection.kind, func.count()).where(Rejection.campaign_id == cid)
                .group_by(Rejection.kind)
            ).all()
        )
        segments, cost = s.execute(
            select(func.coalesce(func.sum(Message.segments), 0), func.sum(Message.cost))
            .where(Message.campaign_id == cid)
        ).one()
    accepted = sum(by_status.values())
    counts = {st.value: by_status.get(st.value, 0) for st in MessageStatus}
    delivered = counts[MessageStatus.DELIVERED]
    return {
        "campaign_id": str(cid),
        "status": campaign.status,
        "submitted": campaign.submitted,
        "duplicates": rejected.get("duplicate", 0),
        "invalid": rejected.get("invalid", 0),
        "suppressed": rejected.get("suppressed", 0),
        "accepted": accepted,
        "counts": counts,
        # Everything the provider took: sent now, or sent and since reported on.
        "sent": sum(counts[st] for st in ("sent", "delivered", "failed", "expired")),
        "delivered": delivered,
        "failed": counts[MessageStatus.FAILED],
        "final": sum(counts[st] for st in FINAL),
        "delivery_rate": round(delivered / accepted, 4) if accepted else 0.0,
        "segments": int(segments),
        "estimated_cost": str(campaign.estimated_cost) if campaign.estimated_cost is not None else None,
        "cost": str(cost) if cost is not None else None,
        "created_at": campaign.created_at.isoformat() if campaign.created_at else None,
        "completed_at": campaign.completed_at.isoformat() if campaign.completed_at else None,
    }
