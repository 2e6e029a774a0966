"""Campaigns at a glance, newest first, for `herald campaigns`."""

from __future__ import annotations

from sqlalchemy import func, select

from campaigns import db
from campaigns.models import Campaign, Message
from campaigns.statuses import FINAL


def list_campaigns(status: str | None = None, limit: int = 50, service_id: int | None = None) -> list[dict]:
    """The newest ``limit`` campaigns (of ``status`` and ``service_id``, if given) with their message counts."""
    query = select(Campaign).order_by(Campaign.created_at.desc(), Campaign.id).limit(limit)
    if status:
        query = query.where(Campaign.status == status)
    if service_id is not None:
        query = query.where(Campaign.service_id == service_id)
    with db.session() as s:
        rows = list(s.scalars(query))
        counts: dict = {}
        if rows:
            for cid, st, n in s.execute(
                select(Message.campaign_id, Message.status, func.count())
                .where(Message.campaign_id.in_([c.id for c in rows]))
                .group_by(Message.campaign_id, Message.status)
            ):
                counts.setdefault(cid, {})[st] = n
    out = []
    for c in rows:
        by_status = counts.get(c.id, {})
        accepted = sum(by_status.values())
        final = sum(n for st, n in by_status.items() if st in FINAL)
        out.append({
            "campaign_id": str(c.id), "service_id": c.service_id, "status": c.status, "sender": c.sender, "provider": c.provider,
            "submitted": c.submitted, "accepted": accepted, "final": final,
            "delivered": by_status.get("delivered", 0), "failed": by_status.get("failed", 0),
            "progress": round(final / accepted, 4) if accepted else 0.0,
            "created_at": c.created_at.isoformat() if c.created_at else None,
        })
    return out
