"""Resolving an ambiguous send (no answer after the request left) by asking, never by resending.

After a short wait (the late request may still be in flight), the provider is asked for the
message by Herald's own reference:
- found: the message is ``sent`` (or further, per the provider's status) with the provider's id;
- provably absent: it goes back to ``queued`` and is sent normally (the provider never took it);
- a provider that cannot be asked by reference but pushes reports carrying our reference
  (TikoSMS ``client_ref``): left for that report, or for the stale-claim sweep;
- a provider that can do neither: ``unknown``, final. Sending again could double it.
"""

from __future__ import annotations

import logging

from sqlalchemy import select, update

from campaigns import db
from campaigns.clock import now
from campaigns.errors import ProviderError
from campaigns.models import Message
from campaigns.reports import apply_report, close_if_finished
from campaigns.statuses import MessageStatus, rank
from worker.providers import get_provider

log = logging.getLogger(__name__)

RESOLVE_AFTER_S = 2.0
MAX_LOOKUPS = 6


def schedule(message_id: int, countdown: float = RESOLVE_AFTER_S) -> None:
    from worker.tasks import resolve_message

    resolve_message.apply_async((message_id,), countdown=countdown)


def resolve(message_id: int, lookups_done: int = 0) -> tuple[str, float | None]:
    """Returns (what happened, seconds until the next lookup or None)."""
    with db.session() as s:
        row = s.execute(select(Message.id, Message.campaign_id, Message.status, Message.provider)
                        .where(Message.id == message_id)).first()
    if row is None or row.status != MessageStatus.SENDING or row.provider is None:
        return "settled", None
    extra = {"campaign_id": str(row.campaign_id), "message_id": row.id, "provider": row.provider}
    provider = get_provider(row.provider)
    if not provider.lookup_by_reference:
        if provider.pushes_reports:
            return "awaiting report", None
        _set(row.id, status=MessageStatus.UNKNOWN, final_at=now(),
             error=f"no answer after sending, and {provider.kind} cannot be asked by reference")
        log.warning("ambiguous send marked unknown", extra=extra)
        return MessageStatus.UNKNOWN, None
    try:
        report = provider.fetch_by_reference(str(row.id))
    except ProviderError:
        if lookups_done + 1 >= MAX_LOOKUPS:
            log.warning("ambiguous send still unresolved", extra=extra)
            return "unresolved", None
        return "lookup failed", RESOLVE_AFTER_S * 2 ** lookups_done
    if report is None:
        _set(row.id, status=MessageStatus.QUEUED, claimed_at=None,
             error="no answer after sending; the provider has no such message, so it is sent again")
        log.info("ambiguous send not taken by the provider: requeued", extra=extra)
        return MessageStatus.QUEUED, None
    _set(row.id, status=MessageStatus.SENT, provider_message_id=report.provider_message_id,
         raw_status=report.raw_status, sent_at=now(), error=None)
    if report.status is not None and rank(report.status) > rank(MessageStatus.SENT):
        report.message_id = row.id
        with db.session() as s:
            apply_report(s, row.provider, report, {"source": "lookup", "status": report.raw_status})
        with db.session() as s:
            close_if_finished(s, row.campaign_id)
    log.info("ambiguous send found at the provider", extra=extra)
    return MessageStatus.SENT, None


def _set(message_id: int, **values) -> None:
    with db.session() as s:
        s.execute(update(Message).where(Message.id == message_id,
                                        Message.status == MessageStatus.SENDING).values(**values))
