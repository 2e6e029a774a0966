"""The send path and fan-out, as plain functions: the Celery tasks only call these.

A message is sent by whoever claims it (``queued -> sending`` in one conditional UPDATE); a
redelivered or duplicated task finds the row already claimed and does nothing.
"""

from __future__ import annotations

import functools
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, case, func, or_, select, update

from campaigns import db
from campaigns.clock import now
from campaigns.errors import (
    Ambiguous, NoRoute, Permanent, ProviderError, ProviderUnavailable, RateLimited, Retryable,
)
from campaigns.models import Campaign, Message
from campaigns.settings import get_settings
from campaigns.signing import webhook_url
from campaigns.statuses import CampaignStatus, MessageStatus
from scheduler.release import defer_if_closed, hold_outside_window
from worker import cooldown, metrics, resolve, routing, throttle
from worker.providers import Outgoing, get_provider

log = logging.getLogger(__name__)

# backoff()'s defaults; the send path passes HERALD_RETRY_BACKOFF_S and HERALD_RETRY_BACKOFF_CAP_S.
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 60.0


@dataclass(frozen=True)
class Outcome:
    """What the task should do next: nothing, or run again after ``retry_in`` seconds."""

    status: str
    retry_in: float | None = None


def backoff(attempt: int, *, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S,
            rng: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    # The exponent is bounded so a large attempt count cannot overflow the float.
    return rng() * min(cap, base * 2.0 ** min(max(attempt - 1, 0), 64))


@dataclass(frozen=True)
class CampaignInfo:
    sender: str
    template: str
    provider: str
    send_window: dict | None = None
    concurrency: int | None = None


@functools.lru_cache(maxsize=256)
def _campaign_info(campaign_id: uuid.UUID) -> CampaignInfo:
    # Sender, template and provider never change after intake, so each process reads them once.
    with db.session() as s:
        c = s.get(Campaign, campaign_id)
        return CampaignInfo(c.sender, c.template, c.provider, c.send_window, c.concurrency)


# The send path's two statements, built once: building and caching an expression per call
# cost more than running it. ``ts`` is the clock's now, passed in (tests move the clock).
_CLAIM = (
    update(Message)
    .where(Message.id == bindparam("mid"), Message.status == MessageStatus.QUEUED,
           Message.campaign_id.in_(select(Campaign.id).where(Campaign.status == CampaignStatus.RUNNING)),
           or_(Message.not_before.is_(None), Message.not_before <= bindparam("ts")))
    .values(status=MessageStatus.SENDING, claimed_at=bindparam("ts"), attempts=Message.attempts + 1)
    .returning(Message.id, Message.campaign_id, Message.phone, Message.body, Message.attempts,
               Message.region)
)
_sending = Message.status == MessageStatus.SENDING
# A report may already have moved the row past `sent`; the reference is recorded anyway.
_RECORD_SENT = (
    update(Message).where(Message.id == bindparam("mid"))
    .values(status=case((_sending, MessageStatus.SENT.value), else_=Message.status),
            provider=bindparam("account"), provider_message_id=bindparam("ref"),
            raw_status=case((_sending, bindparam("raw")), else_=Message.raw_status),
            cost=func.coalesce(Message.cost, bindparam("price", type_=Message.cost.type)),
            sent_at=bindparam("ts"), error=None)
)


def claim(message_id: int):
    """Take the message for sending, or return None if someone else has it or it is not due."""
    with db.autocommit() as conn:
        return db.first(conn, _CLAIM, {"mid": message_id, "ts": now()})


def send(message_id: int) -> Outcome:
    row = claim(message_id)
    if row is None:
        return Outcome("skipped")
    info = _campaign_info(row.campaign_id)
    if info.send_window and defer_if_closed(row.id, row.phone, info.send_window):
        log.info("message waits for its send window",
                 extra={"campaign_id": str(row.campaign_id), "message_id": row.id})
        return Outcome("deferred")
    body = row.body or info.template
    # The campaign names an account or a route; the account actually used is what gets recorded.
    account = routing.choose(info.provider, row.region, info.sender, body)
    extra = {"campaign_id": str(row.campaign_id), "message_id": row.id, "provider": account}
    if account is None:
        _finish(row.id, MessageStatus.FAILED, "no provider account of the route can carry this destination")
        log.info("message has no route", extra=extra)
        return Outcome(MessageStatus.FAILED)
    provider = get_provider(account)
    outgoing = Outgoing(
        reference=str(row.id), to=row.phone, body=body, sender=info.sender,
        callback_url=webhook_url(account, str(row.campaign_id)),
    )
    # A 429 from any worker holds the account until its Retry-After has passed.
    if (wait := cooldown.remaining(account)) > 0:
        return _defer(row, wait + random.uniform(0, 0.25), "cooldown", extra)
    decision = throttle.acquire_for_send(account, row.campaign_id, info.concurrency)
    if decision.wait or not decision.granted:
        metrics.throttle_waited(account, decision.wait)
    if not decision.granted:
        return _defer(row, decision.wait, decision.reason, extra)
    if decision.wait:
        time.sleep(decision.wait)  # a rate slot reserved a moment ahead
    try:
        with metrics.provider_request(account):
            accepted = provider.send(outgoing)
    except Permanent as exc:
        _finish(row.id, MessageStatus.FAILED, str(exc))
        log.info("message failed permanently", extra=extra)
        return Outcome(MessageStatus.FAILED)
    except Ambiguous as exc:
        # The provider may have it: never resend blindly. A lookup (or a report) resolves it.
        _note(row.id, str(exc), provider=account)
        resolve.schedule(row.id)
        log.warning("ambiguous send left for resolution", extra=extra)
        return Outcome(MessageStatus.SENDING)
    except (Retryable, RateLimited, ProviderUnavailable) as exc:
        _account_failed(account, row.region, exc)
        return _retry_later(row, exc, extra)
    finally:
        throttle.release(decision)
    cooldown.success(account)
    _record_sent(row.id, account, accepted.provider_message_id, accepted.raw_status, accepted.cost)
    return Outcome(MessageStatus.SENT)


def _account_failed(account: str, region: str | None, exc: ProviderError) -> None:
    """Tell the other workers: wait out a 429, skip the account for this region, or count it down."""
    if isinstance(exc, RateLimited):
        cooldown.hold(account, exc.retry_after)
    elif isinstance(exc, NoRoute):
        cooldown.no_route(account, region)
    elif isinstance(exc, ProviderUnavailable):
        cooldown.trip(account)
    else:
        cooldown.failure(account)


def _retry_later(row, exc: ProviderError, extra: dict) -> Outcome:
    settings = get_settings()
    if row.attempts >= settings.max_attempts:
        _finish(row.id, MessageStatus.FAILED, f"gave up after {row.attempts} attempts: {exc}")
        log.warning("message failed after retries", extra=extra)
        return Outcome(MessageStatus.FAILED)
    wait = exc.retry_after if isinstance(exc, RateLimited) else backoff(
        row.attempts, base=settings.retry_backoff_s, cap=settings.retry_backoff_cap_s)
    with db.session() as s:
        s.execute(
            update(Message).where(Message.id == row.id, Message.status == MessageStatus.SENDING)
            .values(status=MessageStatus.QUEUED, claimed_at=None, error=str(exc),
                    due_at=now() + timedelta(seconds=wait))
        )
    log.info("send will be retried", extra={**extra, "retry_in": round(wait, 2)})
    return Outcome(MessageStatus.QUEUED, retry_in=wait)


def _defer(row, wait: float, reason: str, extra: dict) -> Outcome:
    """A limit is full or the account cools down: give the claim back without spending an
    attempt (nothing was sent), and come back later."""
    with db.session() as s:
        s.execute(
            update(Message).where(Message.id == row.id, Message.status == MessageStatus.SENDING)
            .values(status=MessageStatus.QUEUED, claimed_at=None, attempts=Message.attempts - 1,
                    due_at=now() + timedelta(seconds=wait))
        )
    log.debug("send throttled", extra={**extra, "limit": reason, "retry_in": round(wait, 3)})
    return Outcome("throttled", retry_in=wait)


def _record_sent(message_id: int, provider: str, provider_message_id: str, raw_status: str, cost) -> None:
    with db.autocommit() as conn:
        db.first(conn, _RECORD_SENT, {"mid": message_id, "account": provider, "ref": provider_message_id,
                                    "raw": raw_status, "price": cost, "ts": now()})


def _finish(message_id: int, status: MessageStatus, error: str) -> None:
    with db.session() as s:
        s.execute(
            update(Message).where(Message.id == message_id, Message.status == MessageStatus.SENDING)
            .values(status=status, error=error, final_at=now())
        )


def _note(message_id: int, error: str, **values) -> None:
    with db.session() as s:
        s.execute(update(Message).where(Message.id == message_id).values(error=error, **values))


def fan_out(campaign_id: str, publish: Callable[[list[int]], None], batch: int) -> int:
    """Publish one send task per queued message after the checkpoint; returns how many."""
    cid = uuid.UUID(campaign_id)
    published = 0
    while True:
        with db.session() as s:
            campaign = s.get(Campaign, cid)
            if campaign is None or campaign.status != CampaignStatus.RUNNING:
                return published
            ids = list(s.scalars(
                select(Message.id)
                .where(Message.campaign_id == cid, Message.id > campaign.fanout_checkpoint,
                       Message.status == MessageStatus.QUEUED)
                .order_by(Message.id).limit(batch)
            ))
        if not ids:
            return published
        due = hold_outside_window(campaign.send_window, ids) if campaign.send_window else ids
        if due:
            publish(due)
        published += len(due)
        # Published before the checkpoint moves: a crash here republishes, and the claim dedups.
        with db.session() as s:
            s.execute(update(Campaign).where(Campaign.id == cid)
                      .values(fanout_checkpoint=ids[-1], fanout_at=now()))


def start_campaign(campaign_id: str) -> None:
    """Begin dispatch of a running campaign (scheduled ones are released by the scheduler)."""
    from worker.tasks import fan_out as fan_out_task

    fan_out_task.delay(campaign_id)
