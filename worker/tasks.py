"""Celery tasks: thin wrappers that take ids and call the functions that hold the rules."""

from __future__ import annotations

from typing import Any

from campaigns import db
from campaigns.settings import get_settings
from campaigns.statuses import MessageStatus
from worker.app import MAX_COUNTDOWN_S, app
from worker.logs import log_context
from worker.send import cancel, dispatch, fanout, settle


@app.task(name="campaigns.submit", ignore_result=False)
def submit(**submission: Any) -> dict:
    """Another service submits a campaign with only the broker: ``send_task("campaigns.submit", kwargs=...)``."""
    import campaigns
    from campaigns.clock import now
    from campaigns.recurring import resolve_slot

    return campaigns.submit(resolve_slot(submission, now())).model_dump(mode="json")


def publish_sends(ids: list[int]) -> None:
    """Publish one send task per message id, all through one producer (one broker connection).

    On Redis the batch pipelines the pushes: one round trip per batch, not per task. Unsupported
    transports (the embedded broker) publish one by one, as before.
    """
    with app.producer_or_acquire() as producer, producer.batch(max(len(ids), 1)):
        for message_id in ids:
            # retry=False: inside the batch nothing touches the network until its flush, which
            # kombu's retry wrapper would not cover anyway; the wrapper only cost time per task.
            send_message.apply_async((message_id,), producer=producer, retry=False)


# A lost database connection fails one statement: these run again, as the send does (each is
# safe to repeat: fan-out resumes from its checkpoint, settling asks again).
@app.task(name="herald.fan_out", autoretry_for=db.CONNECTION_ERRORS, retry_backoff=1,
          retry_backoff_max=MAX_COUNTDOWN_S, max_retries=None)
def fan_out(campaign_id: str) -> int:
    with log_context(campaign_id=campaign_id):
        return fanout.fan_out(campaign_id, publish_sends, get_settings().fanout_batch)


# A lost database connection (a PostgreSQL restart) fails one statement: run the send again.
# The claim makes that safe: a send already made finds its row claimed and is left to the sweeper.
@app.task(name="herald.send_message", bind=True, max_retries=None,
          autoretry_for=db.CONNECTION_ERRORS, retry_backoff=1,
          retry_backoff_max=MAX_COUNTDOWN_S)
def send_message(self, message_id: int) -> str:
    with log_context(message_id=message_id):
        outcome = dispatch.send(message_id)
    if outcome.status == MessageStatus.SENDING:  # in doubt: ask the provider shortly
        settle_message.apply_async((message_id,), countdown=settle.SETTLE_AFTER_S)
    if outcome.retry_in is not None:
        raise self.retry(countdown=countdown(outcome.retry_in))
    return outcome.status


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
