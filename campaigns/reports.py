"""Delivery reports, applied monotonically, and the campaign completion they lead to."""

from __future__ import annotations

import functools
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, exists, func, insert, literal_column, or_, select, update
from sqlalchemy.orm import Session

from campaigns import callbacks, clock, db
from campaigns.aggregate import awaiting_outcome, silent_accounts
from campaigns.models import Campaign, DeliveryReport, Message
from campaigns.schema import unstorable
from campaigns.statuses import FINAL, CampaignStatus, MessageStatus, can_move, fold_parts, rank

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

    @property
    def parts(self) -> tuple[int, int] | None:
        """(part, total_parts) when this reports one part of a multi-part message."""
        try:
            part, total = int(self.extra["part"]), int(self.extra["total_parts"])
        except (KeyError, TypeError, ValueError):
            return None
        return (part, total) if total > 1 and 1 <= part <= total else None


_MAX_BIGINT = 2**63 - 1
_MONEY_LIMIT = Decimal(10) ** 8  # Money is NUMERIC(14, 6)


def report_problem(report: StatusReport) -> tuple[str, str] | None:
    """``(field, why)`` when a report holds a value its columns cannot store, else None.

    Checked before anything is stored, so a hostile or broken report is a 422 naming the field,
    never a database error.
    """
    for name, value, limit in (("raw_status", report.raw_status, 64),
                               ("provider_message_id", report.provider_message_id, 128),
                               ("error", report.error, 2000)):
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > limit or unstorable(value):
            return name, f"must be text of at most {limit} characters, without NUL or lone surrogates"
    if report.message_id is not None and not (
            isinstance(report.message_id, int) and 0 < report.message_id <= _MAX_BIGINT):
        return "message_id", "must be a positive 64-bit integer"
    if report.cost is not None and not (
            report.cost.is_finite() and -_MONEY_LIMIT < report.cost < _MONEY_LIMIT):
        return "cost", f"must be a finite number below {_MONEY_LIMIT:,}"
    # Years 1 and 9999 can leave datetime's range once their offset is applied.
    if report.at is not None and not 1 < report.at.year < 9999:
        return "at", "must be between the years 2 and 9998"
    return None


# Built once: a report costs two statements, and building them per report cost more than running them.
_STORE_REPORT = insert(DeliveryReport.__table__)


@functools.cache
def _advance(status: MessageStatus):
    """The conditional UPDATE that moves a matched message up to ``status`` (never down, never
    from ``queued``: only what was handed to the provider can be reported on)."""
    t = Message.__table__
    values: dict[str, Any] = {
        "status": status.value, "raw_status": bindparam("b_raw"),
        "cost": func.coalesce(bindparam("b_cost", type_=t.c.cost.type), t.c.cost),
        "error": func.coalesce(bindparam("b_error", type_=t.c.error.type), t.c.error),
    }
    if status in FINAL:
        values["final_at"] = bindparam("b_final_at", type_=t.c.final_at.type)
    # The statuses are written into the SQL: an IN over a bound list is expanded again at every
    # execution: 3.6% of the webhook server's samples (py-spy, `herald bench --profile`).
    below = [literal_column(f"'{st}'") for st in _reportable_below(status)]
    return (update(t).where(t.c.id == bindparam("mid"), t.c.status.in_(below),
                            or_(t.c.provider == bindparam("b_provider"), t.c.provider.is_(None)))
            .values(**values).returning(t.c.campaign_id, t.c.callback_url))


def _reportable_below(status: MessageStatus) -> list[str]:
    return [st.value for st in MessageStatus if rank(st) < rank(status) and st != MessageStatus.QUEUED]


def _reportable(provider, campaign_id: uuid.UUID | None) -> list:
    """What a report of ``provider`` may touch: messages handed to that account (never ``queued``),
    and, for a campaign-bound webhook, only that campaign's."""
    # A `sending` message has no provider yet until its send is recorded, and a fast provider's
    # report can arrive first: in flight, it may be reported on; `queued` never.
    scope = [Message.status != MessageStatus.QUEUED.value,
             or_(Message.provider == provider,
                 Message.provider.is_(None) & (Message.status == MessageStatus.SENDING.value))]
    return scope + ([Message.campaign_id == campaign_id] if campaign_id is not None else [])


def apply_report(s: Session, provider: str, report: StatusReport, payload: dict, *,
                 campaign_id: uuid.UUID | None = None) -> bool:
    """Store the raw report, then move the message forward if the report is news. True if it moved.

    The report names a message by Herald's id or the provider's reference; it is stored against
    that message only if the report may touch it (``_reportable``), else kept raw as unmatched
    (message_id NULL), so it changes nothing, not even a later fold of part reports.
    """
    message_id = None
    if report.message_id is not None or report.provider_message_id:
        named = (Message.id == report.message_id) if report.message_id is not None else (
            Message.provider_message_id == report.provider_message_id)
        message_id = s.scalar(select(Message.id).where(named, *_reportable(provider, campaign_id)))
    parts = report.parts
    if parts and message_id is not None and report.status is not None:
        # Parts of one message arriving together must see each other: serialise on the row.
        s.execute(select(Message.id).where(Message.id == message_id).with_for_update())
    conn = s.connection()
    conn.execute(_STORE_REPORT, {
        "message_id": message_id, "provider": provider, "provider_message_id": report.provider_message_id,
        "raw_status": report.raw_status, "status": report.status, "payload": payload,
        "part": parts[0] if parts else None, "cost": report.cost, "at": report.at,
    })
    if report.status is None:
        log.warning("unmapped provider status kept raw",
                    extra={"provider": provider, "message_id": message_id, "raw_status": report.raw_status})
        return False
    if message_id is None:
        log.warning("report for an unknown message", extra={"provider": provider})
        return False
    status, cost, at = report.status, report.cost, report.at
    if parts:
        status, cost, at = _fold(s, message_id, parts[1])
    # One conditional UPDATE: of N concurrent copies of a report, exactly one matches.
    moved = conn.execute(_advance(status), {
        "mid": message_id, "b_provider": provider, "b_raw": report.raw_status,
        "b_cost": cost, "b_error": report.error or None, "b_final_at": (at or clock.now()) if status in FINAL else None,
    }).first()
    if moved is None:
        if parts and cost is not None:
            # A late part still adds its price: the cost is every part's, whatever the order.
            s.execute(update(Message).where(Message.id == message_id).values(cost=cost))
        return False
    if status in FINAL and moved.callback_url:
        callbacks.queue_message_callback(s, moved.campaign_id, message_id, moved.callback_url)
    return True


# The messages a batch of one provider's reports names, by Herald's id or the provider's
# reference, among those its reports may touch (``_reportable``): built once, in Core.
_LOOKUP = select(Message.id, Message.campaign_id, Message.provider_message_id).where(
    or_(Message.id.in_(bindparam("ids", expanding=True)),
        Message.provider_message_id.in_(bindparam("refs", expanding=True))),
    *_reportable(bindparam("provider"), None))


def apply_each(s: Session, batches: list[tuple[str, uuid.UUID | None, list[StatusReport], dict]]) -> list[int]:
    """Apply several requests' reports (``(provider, campaign_id, reports, payload)`` each) in one
    transaction, in order, as ``apply_report`` would one by one; returns each request's count of
    messages moved. For the webhooks' group commit: the messages are looked up in one statement
    per provider and the raw reports stored in one, so a report costs one UPDATE of its own."""
    lookups: dict[str, tuple[set[int], set[str]]] = {}
    for provider, _, reports, _ in batches:
        ids, refs = lookups.setdefault(provider, (set(), set()))
        for r in reports:
            if r.message_id is not None:
                ids.add(r.message_id)
            elif r.provider_message_id:
                refs.add(r.provider_message_id)
    by_id: dict[tuple[str, int], uuid.UUID] = {}
    by_ref: dict[tuple[str, str], list[tuple[int, uuid.UUID]]] = {}
    for provider, (ids, refs) in lookups.items():
        if not ids and not refs:
            continue
        for mid, cid, ref in s.connection().execute(_LOOKUP, {"provider": provider, "ids": list(ids),
                                                              "refs": list(refs)}):
            if mid in ids:
                by_id[provider, mid] = cid
            if ref in refs:
                by_ref.setdefault((provider, ref), []).append((mid, cid))

    def matched(provider: str, campaign_id: uuid.UUID | None, report: StatusReport) -> int | None:
        if report.message_id is not None:
            cid = by_id.get((provider, report.message_id))
            return report.message_id if cid is not None and campaign_id in (None, cid) else None
        rows = by_ref.get((provider, report.provider_message_id), []) if report.provider_message_id else []
        return next((mid for mid, cid in rows if campaign_id in (None, cid)), None)

    conn = s.connection()
    stored: list[dict] = []
    counts: list[int] = []
    for provider, campaign_id, reports, payload in batches:
        moved = 0
        for report in reports:
            if report.parts:  # parts fold against each other row by row
                moved += apply_report(s, provider, report, payload, campaign_id=campaign_id)
                continue
            message_id = matched(provider, campaign_id, report)
            stored.append({"message_id": message_id, "provider": provider,
                           "provider_message_id": report.provider_message_id, "raw_status": report.raw_status,
                           "status": report.status, "payload": payload, "part": None, "cost": report.cost,
                           "at": report.at})
            about = {"provider": provider, "campaign_id": str(campaign_id) if campaign_id else None}
            if report.status is None:
                log.warning("unmapped provider status kept raw",
                            extra={**about, "message_id": message_id, "raw_status": report.raw_status})
                continue
            if message_id is None:
                log.warning("report for an unknown message", extra=about)
                continue
            final = report.status in FINAL
            # On psycopg's cursor: SQLAlchemy's work per execution was most of this UPDATE's cost.
            row = db.first_in(conn, _advance(report.status), {
                "mid": message_id, "b_provider": provider, "b_raw": report.raw_status, "b_cost": report.cost,
                "b_error": report.error or None, "b_final_at": (report.at or clock.now()) if final else None,
            })
            if row is not None:
                moved += 1
                if final and row.callback_url:
                    callbacks.queue_message_callback(s, row.campaign_id, message_id, row.callback_url)
        counts.append(moved)
    if stored:
        conn.execute(_STORE_REPORT, stored)
    return counts


def _fold(s: Session, message_id: int, total: int) -> tuple[MessageStatus, Decimal | None, datetime | None]:
    """The message status, cost and time the stored part reports add up to, whatever their order."""
    by_part: dict[int, MessageStatus] = {}
    costs: dict[int, Decimal] = {}
    times: list[datetime] = []
    rows = s.execute(
        select(DeliveryReport.part, DeliveryReport.status, DeliveryReport.cost, DeliveryReport.at)
        .where(DeliveryReport.message_id == message_id, DeliveryReport.part.is_not(None),
               DeliveryReport.status.is_not(None))
        .order_by(DeliveryReport.id)
    ).all()
    for part, status, cost, at in rows:
        status = MessageStatus(status)
        # Per part, as per message: the first final status stands, later ones change nothing.
        if part not in by_part or can_move(by_part[part], status):
            by_part[part] = status
        if cost is not None:
            costs[part] = cost
        if at is not None:
            times.append(at)
    cost = sum(costs.values(), Decimal(0)) if costs else None
    # The message is as late as its last part.
    return fold_parts(total, by_part), cost, max(times, default=None)


@functools.cache
def _complete(silent: frozenset[str]):
    """The conditional UPDATE that completes a campaign none of whose messages can still change:
    built once (it runs after every batch of reports), in Core, not through the ORM's bulk UPDATE."""
    t = Campaign.__table__
    pending = exists().where(Message.campaign_id == bindparam("cid"), awaiting_outcome(set(silent)))
    return (update(t).where(t.c.id == bindparam("cid"), t.c.status == CampaignStatus.RUNNING.value, ~pending)
            .values(status=CampaignStatus.COMPLETED.value, completed_at=bindparam("now")))


def close_if_finished(s: Session, campaign_id: uuid.UUID) -> bool:
    """Complete a running campaign once none of its messages can still change."""
    done = s.connection().execute(_complete(frozenset(silent_accounts())),
                                  {"cid": campaign_id, "now": clock.now()}).rowcount
    if done:
        callbacks.queue_final_callbacks(s, campaign_id)
    return done == 1
