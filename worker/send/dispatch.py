"""The send path, as plain functions: the send task only calls ``send``.

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

from campaigns import db, messages, windows
from campaigns.clock import now
from campaigns.errors import (
    Ambiguous, NoRoute, Permanent, ProviderError, ProviderUnavailable, RateLimited, Retryable,
)
from campaigns.models import Campaign
from campaigns.settings import get_settings
from campaigns.signing import webhook_url
from campaigns.statuses import MessageStatus
from worker import metrics
from worker.providers import Outgoing, get_provider
from worker.send import cooldown, routing, throttle

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


def send(message_id: int, campaign_id: str | None = None) -> Outcome:
    # Everything that may wait or refuse (window, route, cooldown, limits, the inline rate wait)
    # runs before the claim, so a worker killed in any of it leaves a queued message for the
    # redelivered task, not a claimed one nobody can settle. Between the claim's commit and the
    # request there is nothing left to wait for.
    cid = uuid.UUID(campaign_id) if campaign_id else None
    info = _campaign_info(cid) if cid else None
    if info is not None and not info.send_window and info.provider in get_settings().providers:
        # A campaign on one account, no send window (the common case): nothing before the claim
        # needs the row, so it is not read twice. A message not sendable fails the claim below.
        account = info.provider
    else:
        row = messages.peek(message_id)
        if row is None:
            return Outcome("skipped")
        cid = row.campaign_id
        info = _campaign_info(cid)
        if info.send_window and windows.defer_if_closed(row.id, row.phone, info.send_window):
            log.info("message waits for its send window", extra={"campaign_id": str(cid), "message_id": row.id})
            return Outcome("deferred")
        # The campaign names an account or a route; the account actually used is what gets recorded.
        account = routing.choose(info.provider, row.region, info.sender, row.body or info.template)
        if account is None:
            with db.session() as s:
                messages.fail_queued(s, [row.id], "no provider account of the route can carry this destination")
            log.info("message has no route", extra={"campaign_id": str(cid), "message_id": row.id})
            return Outcome(MessageStatus.FAILED)
    extra = {"campaign_id": str(cid), "message_id": message_id, "provider": account}
    # A 429 from any worker holds the account until its Retry-After has passed.
    if (wait := cooldown.remaining(account)) > 0:
        return _defer(message_id, wait + random.uniform(0, 0.25), "cooldown", extra)
    decision = throttle.acquire_for_send(account, cid, info.concurrency)
    if decision.wait or not decision.granted:
        metrics.throttle_waited(account, decision.wait)
    if not decision.granted:
        return _defer(message_id, decision.wait, decision.reason, extra)
    try:
        if decision.wait:
            time.sleep(decision.wait)  # a rate slot reserved a moment ahead
        row = _claim(message_id)
        if row is None:  # another delivery of the task has it, or it was paused meanwhile
            return Outcome("skipped")
        outgoing = Outgoing(reference=str(row.id), to=row.phone, body=row.body or info.template,
                            sender=info.sender, callback_url=webhook_url(account, str(row.campaign_id)))
        with metrics.provider_request(account):
            accepted = get_provider(account).send(outgoing)
    except Permanent as exc:
        messages.finish(row.id, MessageStatus.FAILED, str(exc))
        log.info("message failed permanently", extra=extra)
        return Outcome(MessageStatus.FAILED)
    except Ambiguous as exc:
        # The provider may have it: never resend blindly. The task asks shortly (worker/send/settle.py).
        messages.note(row.id, str(exc), provider=account)
        # The reason is Herald's own words (worker/providers/base.py): which transport failure.
        log.warning("ambiguous send left for resolution", extra={**extra, "reason": str(exc)})
        return Outcome(MessageStatus.SENDING)
    except (Retryable, RateLimited, ProviderUnavailable) as exc:
        _account_failed(account, row.region, exc)
        return _retry_later(row, exc, extra)
    finally:
        throttle.release(decision)  # also the lease of a claim that was lost
    cooldown.success(account)
    _outlast_the_database(messages.record_sent, row.id, account, accepted.provider_message_id,
                          accepted.raw_status, accepted.cost)
    return Outcome(MessageStatus.SENT)


RECORD_PATIENCE_S = 60.0


def _claim(message_id: int):
    """The claim, made once. A claim whose answer was lost with its connection (PostgreSQL
    restarting) may have committed: a retry of the task would then find the row claimed and leave
    it to the stale-claim policy, though only this attempt could have sent it and it did not. So
    the database is waited out here, and the claim found as this one's own or made anew."""
    ts = now()
    try:
        return messages.claim(message_id, ts)
    except db.CONNECTION_ERRORS:
        return _outlast_the_database(lambda: messages.own_claim(message_id, ts) or messages.claim(message_id))


def _outlast_the_database(write, *args):
    """``write(*args)`` for what only this process knows (the provider took the message, or its
    claim may have committed): a lost database connection (PostgreSQL restarting) is waited out
    here, up to RECORD_PATIENCE_S, not handed to a task retry that would find the row claimed and
    leave it for the stale-claim policy."""
    deadline, pause = time.monotonic() + RECORD_PATIENCE_S, 0.25
    while True:
        try:
            return write(*args)
        except db.CONNECTION_ERRORS:
            if time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


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
        messages.finish(row.id, MessageStatus.FAILED, f"gave up after {row.attempts} attempts: {exc}")
        log.warning("message failed after retries", extra=extra)
        return Outcome(MessageStatus.FAILED)
    wait = exc.retry_after if isinstance(exc, RateLimited) else backoff(
        row.attempts, base=settings.retry_backoff_s, cap=settings.retry_backoff_cap_s)
    messages.retry_later(row.id, str(exc), wait)
    log.info("send will be retried", extra={**extra, "retry_in": round(wait, 2)})
    return Outcome(MessageStatus.QUEUED, retry_in=wait)


def _defer(message_id: int, wait: float, reason: str, extra: dict) -> Outcome:
    """A limit is full or the account cools down: the unclaimed message waits (no attempt is
    spent), and the task comes back when its turn is due."""
    messages.postpone(message_id, wait_s=wait)
    log.debug("send throttled", extra={**extra, "limit": reason, "retry_in": round(wait, 3)})
    return Outcome("throttled", retry_in=wait)
