"""Polling providers for the statuses of sent messages (those that push are polled only as a
fallback, for messages whose report seems lost).

Each run claims its rows by stamping ``polled_at`` (scheduler/periodic.py), so two beats running
at once ask about each message once.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta

from sqlalchemy import or_, select

from campaigns import clock, db, messages
from campaigns.errors import ConfigurationError, ProviderError, RateLimited
from campaigns.models import Message
from campaigns.reports import apply_report, close_if_finished
from campaigns.settings import ProviderAccount, get_settings
from campaigns.statuses import MessageStatus
from scheduler.periodic import periodic_task
from scheduler.schedule import POLL_EVERY_S
from worker.providers import get_provider

log = logging.getLogger(__name__)

# Polls take at most this share of an account's rate, leaving the rest to sends.
POLL_RATE_SHARE = 0.5


def poll_budget(account: ProviderAccount, batch: int, every_s: float = POLL_EVERY_S) -> int:
    """Messages one poll run may ask about: the batch, inside the account's own rate limit."""
    if account.rate_per_s is None:
        return batch
    return max(1, min(batch, math.floor(account.rate_per_s * every_s * POLL_RATE_SHARE)))


def _due_for_poll(account: str, pushes: bool, now: datetime):
    settings = get_settings()
    # Pushing providers are asked only about messages whose push seems lost.
    wait = settings.poll_fallback_after_s if pushes else settings.poll_interval_s
    before = now - timedelta(seconds=wait)
    conditions = [Message.status == MessageStatus.SENT, Message.provider == account,
                  Message.provider_message_id.is_not(None),
                  or_(Message.polled_at.is_(None), Message.polled_at <= before)]
    if pushes:
        conditions.append(Message.sent_at <= before)
    return conditions


def poll_account(account: str, *, now: datetime | None = None) -> int:
    """Ask one provider account about its unreported messages; returns how many moved."""
    settings = get_settings()
    provider = get_provider(account)
    if not provider.can_poll:
        return 0
    now = now or clock.now()
    due = _due_for_poll(account, provider.pushes_reports, now)
    limit = poll_budget(settings.providers[account], settings.poll_batch)
    with db.session() as s:
        ids = list(s.scalars(select(Message.id).where(*due)
                             .order_by(Message.polled_at.nulls_first(), Message.id).limit(limit)))
        rows = messages.mark_polled(s, ids, due, now)
    moved = 0
    moved_campaigns = set()
    for row in sorted(rows):
        extra = {"campaign_id": str(row.campaign_id), "message_id": row.id, "provider": account}
        try:
            report = provider.fetch_status(row.provider_message_id)
        except RateLimited:
            log.info("report polling paused by the provider's rate limit", extra=extra)
            break
        except (ProviderError, NotImplementedError) as exc:
            log.warning("report poll failed: %s", exc, extra=extra)
            continue
        if report is None:
            continue
        report.message_id = row.id
        payload = {"source": "poll", "provider_message_id": row.provider_message_id,
                   "raw_status": report.raw_status, **report.extra}
        with db.session() as s:
            if apply_report(s, account, report, payload):
                moved += 1
                moved_campaigns.add(row.campaign_id)
    for cid in moved_campaigns:
        with db.session() as s:
            close_if_finished(s, cid)
    return moved


@periodic_task("herald.poll_reports")
def poll_reports() -> int:
    moved = 0
    for account in get_settings().providers:
        try:
            moved += poll_account(account)
        except ConfigurationError as exc:
            log.warning("account not polled: %s", exc, extra={"provider": account})
    return moved
