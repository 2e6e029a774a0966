"""A campaign's messages in keyset pages (``id > after``), never OFFSET: every page costs the same."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from campaigns import db
from campaigns.errors import NotFound
from campaigns.models import Campaign, Message

MAX_PAGE = 1000


def list_messages(campaign_id: str | uuid.UUID, *, after: int = 0, limit: int = 100,
                  status: str | None = None) -> dict[str, Any]:
    """Ids, statuses and outcomes: no phone number or text leaves through this listing."""
    cid = uuid.UUID(str(campaign_id))
    limit = max(1, min(limit, MAX_PAGE))
    query = select(Message).where(Message.campaign_id == cid, Message.id > after)
    if status:
        query = query.where(Message.status == status)
    with db.session() as s:
        if s.get(Campaign, cid) is None:
            raise NotFound(f"no campaign {cid}")
        rows = list(s.scalars(query.order_by(Message.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "messages": [_row(m) for m in rows],
        "next_after": rows[-1].id if more else None,
    }


def _row(m: Message) -> dict[str, Any]:
    return {
        "id": m.id, "status": m.status, "raw_status": m.raw_status, "client_ref": m.client_ref,
        "region": m.region, "provider": m.provider, "provider_message_id": m.provider_message_id,
        "segments": m.segments, "cost": str(m.cost) if m.cost is not None else None,
        "error": m.error, "sent_at": _iso(m.sent_at), "final_at": _iso(m.final_at),
    }


def _iso(at) -> str | None:
    return at.isoformat() if at else None
