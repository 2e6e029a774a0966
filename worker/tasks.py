"""Celery tasks: thin wrappers that take ids and call the functions that hold the rules."""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.request import Request

from campaigns import db
from campaigns.settings import get_settings
from campaigns.statuses import MessageStatus
from worker import broker, queues
from worker.app import MAX_COUNTDOWN_S, app
from worker.logs import REDACTED, log_context
from worker.send import cancel, dispatch, fanout, settle

log = logging.getLogger(__name__)


class RedactedRequest(Request):
    """For a task whose arguments carry numbers and text: Celery's own log lines and events
    (so Flower too) show its arguments, result and exception text as ``<redacted>``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._argsrepr = self._kwargsrepr = REDACTED
        # The trace's success line reads these from the request dict, not from the properties.
        self._request_dict["argsrepr"] = self._request_dict["kwargsrepr"] = REDACTED

    def send_event(self, type, **fields):
        if "result" in fields:
            fields["result"] = REDACTED
        if "exception" in fields:  # keep the exception's type, drop what it says
            fields["exception"] = str(fields["exception"]).split("(", 1)[0] + f"({REDACTED})"
        if "traceback" in fields:
            fields["traceback"] = REDACTED
        return super().send_event(type, **fields)


@app.task(name="campaigns.submit", ignore_result=False, Request=RedactedRequest)
def submit(service: str | None = None, **submission: Any) -> dict:
    """Another service submits a campaign with only the broker: ``send_task("campaigns.submit",
    kwargs={"service": "billing", ...})``. The broker is inside the trust boundary: whoever can
    publish there may name any service, so ``service`` is required, never assumed."""
    import campaigns
    from campaigns.clock import now
    from campaigns.errors import HeraldError, NotFound, SubmissionError, Withheld
    from campaigns.recurring import resolve_slot

    if not isinstance(service, str) or not service:
        raise SubmissionError.at(["service"], "campaigns.submit needs the name of its service", "missing")
    try:
        return campaigns.submit(resolve_slot(submission, now()), service=service).model_dump(mode="json")
    except NotFound:
        raise SubmissionError.at(["service"], "no such service", "unknown_service") from None
    except HeraldError:
        raise  # Herald's own messages name fields, never values
    except Exception as exc:
        # Stored in the result backend and shown by Flower as raised: a database error's message
        # can quote the numbers and text. The log keeps its frames and types (worker/logs.py).
        log.error("campaigns.submit failed", exc_info=True)
        raise Withheld.of(exc) from None


def publish_sends(ids: list[int], queue: str = queues.SEND, token: fanout.Token | None = None,
                  campaign_id: str | None = None) -> None:
    """Publish one send task per message id on ``queue``, all through one producer (one broker
    connection); the send of ``token.carrier`` carries the window's refill token. Sends of one
    campaign name it (``campaign_id``), so the send need not read its row before the claim.

    On Redis the pushes go in one pipeline: one round trip per batch, not per task (through
    kombu's batch where Herald does not write the messages itself: rediss://). The embedded
    broker publishes one by one.
    """
    carrier = token.carrier if token else None
    common = {"campaign": campaign_id} if campaign_id else {}
    calls = (((message_id,), {**common, "refill": [token.campaign_id, token.seq]} if message_id == carrier
              else common) for message_id in ids)
    with app.producer_or_acquire() as producer, producer.batch(max(len(ids), 1)):
        broker.publish_calls(producer, send_message, calls, queue)


def schedule_refill(token: fanout.Token) -> None:
    fan_out.apply_async((token.campaign_id,), {"seq": token.seq}, countdown=countdown(token.delay_s))


# A lost database connection fails one statement: these run again, as the send does (each is
# safe to repeat: fan-out resumes from its checkpoint, settling asks again).
@app.task(name="herald.fan_out", autoretry_for=db.CONNECTION_ERRORS, retry_backoff=1,
          retry_backoff_max=MAX_COUNTDOWN_S, max_retries=None)
def fan_out(campaign_id: str, seq: int | None = None) -> int:
    """Top up the campaign's dispatch window (worker/send/fanout.py). Without ``seq``, start or
    take over its refill chain."""
    with log_context(campaign_id=campaign_id):
        return fanout.refill(campaign_id, publish_sends, schedule_refill, seq).published


# A lost database connection (a PostgreSQL restart) fails one statement: run the send again.
# The claim makes that safe: a send already made finds its row claimed and is left to the sweeper.
@app.task(name="herald.send_message", bind=True, max_retries=None,
          autoretry_for=db.CONNECTION_ERRORS, retry_backoff=1,
          retry_backoff_max=MAX_COUNTDOWN_S)
def send_message(self, message_id: int, refill: list | None = None, campaign: str | None = None) -> str:
    """``refill`` ([campaign id, seq]) is the window's token: once this send has run (so its
    message has left ``queued``, or gone back to wait), top the window up, and for a campaign
    that follows on send its next messages here (worker/send/fanout.py). ``campaign``: the
    message's campaign, when the publisher knew it."""
    outcome = _send(message_id, campaign)
    if refill:
        with log_context(campaign_id=refill[0]):
            fanout.follow_on(refill[0], refill[1], publish_sends, schedule_refill, _send_here,
                             get_settings().follow_on_s)
    if outcome.retry_in is not None:
        # The token stays here: a retry waiting its countdown must not hold the window's refill.
        raise self.retry(countdown=countdown(outcome.retry_in), kwargs={"campaign": campaign})
    return outcome.status


def _send(message_id: int, campaign: str | None = None) -> dispatch.Outcome:
    with log_context(message_id=message_id):
        outcome = dispatch.send(message_id, campaign)
    if outcome.status == MessageStatus.SENDING:  # in doubt: ask the provider shortly
        settle_message.apply_async((message_id,), countdown=settle.SETTLE_AFTER_S)
    return outcome


def _send_here(message_id: int, queue: str, campaign: str) -> None:
    """A follow-on send, in the thread of the send before it: as its own task would, it comes
    back as a task of its own (on its campaign's queue) if it must wait."""
    outcome = _send(message_id, campaign)
    if outcome.retry_in is not None:
        send_message.apply_async((message_id,), {"campaign": campaign}, countdown=countdown(outcome.retry_in),
                                 queue=queue)


def countdown(wait: float) -> float:
    """Every countdown Herald gives the broker: capped well below its visibility timeout."""
    return min(max(wait, 0.0), MAX_COUNTDOWN_S)


@app.task(name="herald.cancel_at_provider")
def cancel_at_provider(campaign_id: str) -> int:
    return cancel.cancel_sent(campaign_id)


@app.task(name="herald.settle_message", bind=True, max_retries=None)
def settle_message(self, message_id: int) -> str:
    """Settle an ambiguous send by asking the provider (worker/send/settle.py)."""
    with log_context(message_id=message_id):
        status, retry_in = settle.settle_ambiguous(message_id, get_settings(), self.request.retries)
    if retry_in is not None:
        raise self.retry(countdown=countdown(retry_in))
    if status == MessageStatus.QUEUED:
        send_message.delay(message_id)
    return status
