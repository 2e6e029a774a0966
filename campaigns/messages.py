"""Every change to a message row, each one named, conditional statement.

Each write states the status it moves from, so two workers, two beats or a late answer racing
each other agree on one outcome: the statement that matched. Delivery reports are the one other
writer (campaigns/reports.py). A function taking a Session runs in the caller's transaction; the
others are a transaction of their own.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import bindparam, case, func, or_, select, update
from sqlalchemy.orm import Session

from campaigns import db
from campaigns.clock import now
from campaigns.models import Campaign, Message
from campaigns.statuses import CampaignStatus, MessageStatus

_sending = Message.status == MessageStatus.SENDING

# The send path's statements, built once: building and caching an expression per call cost
# more than running it. ``ts`` is the clock's now, passed in (tests move the clock).
_SENDABLE = (Message.id == bindparam("mid"), Message.status == MessageStatus.QUEUED,
             Message.campaign_id.in_(select(Campaign.id).where(Campaign.status == CampaignStatus.RUNNING)),
             or_(Message.not_before.is_(None), Message.not_before <= bindparam("ts")))
_SEND_FIELDS = (Message.id, Message.campaign_id, Message.phone, Message.body, Message.attempts, Message.region)
_PEEK = select(*_SEND_FIELDS).where(*_SENDABLE)
_CLAIM = (
    update(Message).where(*_SENDABLE)
    .values(status=MessageStatus.SENDING, claimed_at=bindparam("ts"), attempts=Message.attempts + 1)
    .returning(*_SEND_FIELDS)
)
_OWN_CLAIM = select(*_SEND_FIELDS).where(Message.id == bindparam("mid"), _sending,
                                         Message.claimed_at == bindparam("ts"))
# A report may already have moved the row past `sent`; the reference is recorded anyway.
_RECORD_SENT = (
    update(Message).where(Message.id == bindparam("mid"))
    .values(status=case((_sending, MessageStatus.SENT.value), else_=Message.status),
            provider=bindparam("account"), provider_message_id=bindparam("ref"),
            raw_status=case((_sending, bindparam("raw")), else_=Message.raw_status),
            cost=func.coalesce(Message.cost, bindparam("price", type_=Message.cost.type)),
            sent_at=bindparam("ts"), error=None)
)


def peek(message_id: int):
    """The fields a send needs before it claims (id, campaign_id, phone, body, attempts, region)
    of a due, queued message of a running campaign, or None; nothing is written."""
    return db.first(_PEEK, {"mid": message_id, "ts": now()})


def claim(message_id: int, ts: datetime | None = None):
    """``queued -> sending`` for a due message of a running campaign: the row (as ``peek``, with
    this attempt counted), or None if someone else has it or it is not due. ``ts`` (default now)
    is stamped as ``claimed_at``: what ``own_claim`` knows this claim by."""
    return db.first(_CLAIM, {"mid": message_id, "ts": ts or now()})


def own_claim(message_id: int, ts: datetime):
    """The row (as ``claim``) if it is still ``sending`` under the claim stamped ``ts``, or None."""
    return db.first(_OWN_CLAIM, {"mid": message_id, "ts": ts})


def record_sent(message_id: int, account: str, provider_message_id: str | None, raw_status: str,
                cost: Decimal | None) -> None:
    """``sending -> sent`` with the provider's reference: the provider took the message."""
    db.first(_RECORD_SENT, {"mid": message_id, "account": account, "ref": provider_message_id,
                            "raw": raw_status, "price": cost, "ts": now()})


def _claimed(message_id: int, claimed_at: datetime | None):
    """The row, while it is still ``sending`` (under the claim seen, when one is given)."""
    held = update(Message).where(Message.id == message_id, _sending)
    return held if claimed_at is None else held.where(Message.claimed_at == claimed_at)


def _run(statement) -> bool:
    with db.session() as s:
        return s.execute(statement).rowcount == 1


def retry_later(message_id: int, error: str, wait_s: float) -> bool:
    """``sending -> queued`` after a refused attempt (it counts): due again in ``wait_s``."""
    return _run(_claimed(message_id, None).values(
        status=MessageStatus.QUEUED, claimed_at=None, error=error, due_at=now() + timedelta(seconds=wait_s)))


def postpone(message_id: int, *, wait_s: float | None = None, not_before: datetime | None = None) -> bool:
    """A queued message waits before it is claimed (a limit is full, the account cools down, the
    send window is closed): due again in ``wait_s``, or held until ``not_before``."""
    values: dict = {}
    if wait_s is not None:
        values["due_at"] = now() + timedelta(seconds=wait_s)
    if not_before is not None:
        values["not_before"] = not_before
    return _run(update(Message).where(Message.id == message_id, Message.status == MessageStatus.QUEUED)
                .values(**values))


def finish(message_id: int, status: MessageStatus, error: str, *, claimed_at: datetime | None = None) -> bool:
    """``sending -> status`` (final) without a report: refused for good, no route, poison."""
    return _run(_claimed(message_id, claimed_at).values(status=status, error=error, final_at=now()))


def mark_unknown(message_id: int, error: str, *, claimed_at: datetime | None = None) -> bool:
    """``sending -> unknown``: it may have reached the provider, and nobody can tell."""
    return finish(message_id, MessageStatus.UNKNOWN, error, claimed_at=claimed_at)


def note(message_id: int, error: str, *, provider: str | None = None) -> None:
    """Keep why a send is in doubt, and the account it went to, on a row left ``sending``."""
    values: dict = {"error": error}
    if provider is not None:
        values["provider"] = provider
    _run(_claimed(message_id, None).values(**values))


def requeue(message_id: int, error: str, *, claimed_at: datetime | None = None) -> bool:
    """``sending -> queued``: the provider provably never got it (or the policy resends)."""
    return _run(_claimed(message_id, claimed_at).values(
        status=MessageStatus.QUEUED, claimed_at=None, error=error, due_at=now()))


def record_found(message_id: int, provider_message_id: str | None, raw_status: str,
                 sent_at: datetime | None, cost: Decimal | None, *, account: str,
                 claimed_at: datetime | None = None) -> bool:
    """``sending -> sent`` at ``account``: a lookup found the message there; its report follows
    (and may touch only messages sent through that account, so the account is recorded)."""
    return _run(_claimed(message_id, claimed_at).values(
        status=MessageStatus.SENT, provider=account, provider_message_id=provider_message_id,
        raw_status=raw_status,
        sent_at=sent_at or now(), error=None, cost=func.coalesce(cost, Message.cost)))


def hold_until(s: Session, ids: list[int], at: datetime) -> None:
    """Queued messages wait for their send window: nothing publishes them before ``at``."""
    s.execute(update(Message).where(Message.id.in_(ids), Message.status == MessageStatus.QUEUED)
              .values(not_before=at))


def fail_queued(s: Session, ids: list[int], error: str) -> None:
    """``queued -> failed`` for messages that can never be sent (a window that never opens)."""
    s.execute(update(Message).where(Message.id.in_(ids), Message.status == MessageStatus.QUEUED)
              .values(status=MessageStatus.FAILED, error=error, final_at=now()))


def release_held(s: Session, ids: list[int]) -> None:
    """Their window opened and they were published: no longer held."""
    s.execute(update(Message).where(Message.id.in_(ids)).values(not_before=None)
              .execution_options(synchronize_session=False))


def take_for_window(s: Session, campaign_id: uuid.UUID, after: int, limit: int) -> list[int]:
    """The next ``limit`` queued messages after the checkpoint, in id order, stamped as published
    now (``due_at``): the sweeper takes a window's send for lost only once it has been out long."""
    page = (select(Message.id)
            .where(Message.campaign_id == campaign_id, Message.status == MessageStatus.QUEUED,
                   Message.id > after, Message.not_before.is_(None))
            .order_by(Message.id).limit(limit))
    return sorted(s.scalars(
        update(Message).where(Message.id.in_(page), Message.status == MessageStatus.QUEUED)
        .values(due_at=now()).returning(Message.id).execution_options(synchronize_session=False)
    ))


def republish_lost(campaign_id: uuid.UUID, checkpoint: int, published_at: datetime, cutoff: datetime,
                   limit: int) -> list[int]:
    """Take up to ``limit`` queued messages whose task should have run before ``cutoff`` (lost
    with a worker or a broker restart) for publishing again; of two sweeps, one takes each."""
    lost = (Message.campaign_id == campaign_id, Message.status == MessageStatus.QUEUED,
            Message.id <= checkpoint, func.coalesce(Message.due_at, published_at) < cutoff,
            # Waiting for its send window is not lost; once due, the window release publishes it.
            or_(Message.not_before.is_(None), Message.not_before < cutoff))
    with db.session() as s:
        return sorted(s.scalars(
            update(Message)
            .where(Message.id.in_(select(Message.id).where(*lost).order_by(Message.id).limit(limit)), *lost)
            .values(due_at=now()).returning(Message.id)
        ))


def mark_polled(s: Session, ids: list[int], due: list, at: datetime) -> list:
    """Stamp ``polled_at`` on those still due for a poll: a second beat's run skips them."""
    return s.execute(
        update(Message).where(Message.id.in_(ids), *due).values(polled_at=at)
        .returning(Message.id, Message.campaign_id, Message.provider_message_id)
    ).all() if ids else []


def expire_overdue(s: Session, ids: list[int]) -> list[uuid.UUID]:
    """``sent -> expired``: no final report came within the validity. Returns their campaigns."""
    return list(s.scalars(
        update(Message).where(Message.id.in_(ids), Message.status == MessageStatus.SENT)
        .values(status=MessageStatus.EXPIRED, raw_status="EXPIRED", final_at=now(),
                error="no final report within the validity period")
        .returning(Message.campaign_id)
    ))


def cancel_queued(s: Session, campaign_id: uuid.UUID) -> None:
    """``queued -> cancelled`` for every message of a cancelled campaign."""
    s.execute(update(Message).where(Message.campaign_id == campaign_id, Message.status == MessageStatus.QUEUED)
              .values(status=MessageStatus.CANCELLED, final_at=now(), error="campaign cancelled"))


def cancel_sent(message_id: int) -> bool:
    """``sent -> cancelled``: the provider cancelled it before it left."""
    return _run(update(Message).where(Message.id == message_id, Message.status == MessageStatus.SENT)
                .values(status=MessageStatus.CANCELLED, final_at=now(), error="cancelled at provider"))
