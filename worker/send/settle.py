"""Settling a send left in doubt, by asking the provider, never by resending blindly.

A message stays ``sending`` without an answer in two ways:
- **ambiguous**: the request left and no answer came back (a timeout). ``settle_ambiguous`` asks
  a moment later (the late request may still be in flight), a few times if the lookup fails.
- **stale**: its worker was lost mid-send (claimed more than ``stale_claim_s`` ago). The sweeper
  (scheduler/sweep.py) calls ``settle_stale`` for each campaign.

Both ask one question, ``lookup`` (the provider, from what Herald knows of the send: its
reference, recipient, text and claim time), and follow one pure rule, ``decide``: only a report
that names the message settles it. "Not found" is no evidence: no provider's document promises
that its listing holds every message it took (MobSMS's history may lag the request that timed
out, and shows no reference of ours), so it is treated like a provider that cannot be asked: the
stale-claim policy applies, never a resend of its own. A message the provider has is recorded
``sent`` and its report then goes through ``apply_report`` like any other report: stored raw,
parts folded, callbacks queued.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select

from campaigns import db, messages
from campaigns.clock import now
from campaigns.errors import ProviderError
from campaigns.models import Campaign, Message
from campaigns.reports import StatusReport, apply_report, close_if_finished
from campaigns.settings import Settings
from campaigns.statuses import MessageStatus
from worker.providers import get_provider
from worker.providers.base import SentQuery

log = logging.getLogger(__name__)

SETTLE_AFTER_S = 2.0  # first lookup of an ambiguous send; doubled after each failed lookup
MAX_LOOKUPS = 6  # then the ambiguous send is left to the sweeper
BATCH = 1000


@dataclass(frozen=True)
class Resolution:
    """What becomes of one message in doubt."""

    action: str  # "report" | "requeue" | "fail" | "unknown" | "wait"
    reason: str
    report: StatusReport | None = None


def decide(found: StatusReport | None, *, policy: str, attempts: int, max_deliveries: int,
           patient: bool) -> Resolution:
    """Decide from what the provider said (pure).

    ``found`` is a report that names the message, or None: no evidence either way (the provider
    cannot be asked, the lookup failed, or it found nothing). ``patient`` is whether something may
    still settle it (a report, another lookup) before the policy applies.
    """
    if found is not None:
        return Resolution("report", "the provider has it", found)
    if patient:
        return Resolution("wait", "the provider has not shown it yet")
    if policy != "resend":
        return Resolution("unknown", "no answer came back from the send and the provider cannot be asked, or does not show it")
    if attempts >= max_deliveries:
        return Resolution("fail", f"the send was interrupted {attempts} times (poison message)")
    return Resolution("requeue", "the send was interrupted; resend policy")


def lookup(account: str | None, row) -> StatusReport | None:
    """Ask the provider for the message in ``row`` (id, phone, body, claimed_at, provider_message_id):
    a report that names it, or None."""
    if account is None:  # claimed, then lost before an account was chosen: nobody to ask
        return None
    provider = get_provider(account)
    if not provider.lookup_by_reference:
        return None
    query = SentQuery(reference=str(row.id), to=row.phone, body=row.body, since=row.claimed_at,
                      provider_message_id=row.provider_message_id)
    try:
        return provider.fetch_by_reference(query)
    except ProviderError as exc:
        log.warning("lookup by reference failed", extra={"message_id": row.id, "error": type(exc).__name__})
        return None


# What a lookup matches on, and what settling needs: the text as sent (a row's own rendering, or
# the campaign's template verbatim).
_IN_DOUBT = (
    select(Message.id, Message.campaign_id, Message.status, Message.provider, Message.attempts,
           Message.claimed_at, Message.phone, Message.provider_message_id,
           func.coalesce(Message.body, Campaign.template).label("body"))
    .join(Campaign, Campaign.id == Message.campaign_id)
)


def _can_still_tell(account: str) -> bool:
    provider = get_provider(account)
    return provider.pushes_reports or provider.lookup_by_reference


def apply(row, account: str | None, decision: Resolution) -> bool:
    """Carry out ``decision`` on ``row`` (id, campaign_id, claimed_at) if it is still that claim."""
    claim = {"claimed_at": row.claimed_at}
    if decision.action == "requeue":
        return messages.requeue(row.id, decision.reason, **claim)
    if decision.action == "fail":
        return messages.finish(row.id, MessageStatus.FAILED, decision.reason, **claim)
    if decision.action == "unknown":
        return messages.mark_unknown(row.id, decision.reason, **claim)
    if decision.action != "report":
        return False
    report = decision.report
    if not messages.record_found(row.id, report.provider_message_id, report.raw_status, report.at,
                                 report.cost, account=account, **claim):
        return False  # a late answer or another sweep settled it first
    report.message_id = row.id
    with db.session() as s:
        apply_report(s, account, report, {"source": "lookup", "status": report.raw_status, **report.extra})
    # After the commit: a concurrent settle of the campaign's last other message must see this one.
    with db.session() as s:
        close_if_finished(s, row.campaign_id)
    return True


def settle_ambiguous(message_id: int, settings: Settings, lookups_done: int = 0) -> tuple[str, float | None]:
    """Returns (what happened, seconds until the next lookup or None)."""
    with db.session() as s:
        row = s.execute(_IN_DOUBT.where(Message.id == message_id)).first()
    if row is None or row.status != MessageStatus.SENDING or row.provider is None:
        return "settled", None
    found = lookup(row.provider, row)
    # Nothing waits on a provider that can neither report nor be asked: its policy applies now.
    decision = decide(found, policy=settings.stale_claim_policy, attempts=row.attempts,
                      max_deliveries=settings.max_deliveries, patient=_can_still_tell(row.provider))
    extra = {"campaign_id": str(row.campaign_id), "message_id": row.id, "provider": row.provider,
             "action": decision.action}
    if decision.action == "wait":
        if get_provider(row.provider).lookup_by_reference and lookups_done + 1 < MAX_LOOKUPS:
            return "lookup failed", SETTLE_AFTER_S * 2 ** lookups_done
        return "awaiting report", None  # a report, or the sweeper, settles it
    if apply(row, row.provider, decision):
        log.info("ambiguous send settled", extra=extra)
        return ("sent" if decision.action == "report" else
                MessageStatus.QUEUED.value if decision.action == "requeue" else decision.action), None
    return "settled", None


def settle_stale(campaign_id: uuid.UUID, account: str | None, settings: Settings,
                 publish: Callable[[list[int]], None]) -> Counter:
    """Settle the campaign's claims older than ``stale_claim_s``; requeued ones are published.

    ``account`` is the campaign's own account (None for a route): where a row names none yet."""
    t = now()
    cutoff = t - timedelta(seconds=settings.stale_claim_s)
    # A stale claim that something may still settle (a pushed report, a lookup that failed) waits
    # stale_report_wait_s more before the policy applies.
    patience = cutoff - timedelta(seconds=settings.stale_report_wait_s)
    with db.session() as s:
        stale = s.execute(
            _IN_DOUBT.where(Message.campaign_id == campaign_id, Message.status == MessageStatus.SENDING,
                            Message.claimed_at < cutoff)
            .order_by(Message.id).limit(BATCH)
        ).all()
    done: Counter = Counter()
    requeued: list[int] = []
    for row in stale:
        provider = row.provider or account
        decision = decide(lookup(provider, row), policy=settings.stale_claim_policy,
                          attempts=row.attempts, max_deliveries=settings.max_deliveries,
                          patient=row.claimed_at >= patience and provider is not None and _can_still_tell(provider))
        if decision.action == "wait" or not apply(row, provider, decision):
            continue
        done[decision.action] += 1
        if decision.action == "requeue":
            requeued.append(row.id)
        log.warning("stale claim settled", extra={"campaign_id": str(campaign_id), "message_id": row.id,
                                                  "action": decision.action, "reason": decision.reason})
    if requeued:
        publish(requeued)
    return done
