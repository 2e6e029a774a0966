"""Group commit for delivery-report webhooks: concurrent requests share one transaction.

A provider pushing a burst sends each report in a request of its own. A transaction per report,
and a completion check per report, cost far more than the HTTP around them. Here the reports
that arrive while one batch commits form the next batch, so the batch grows with the load and
a lone report waits for nobody. Each request still answers only after its own report has
committed: an acknowledged report is never lost.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from campaigns import db
from campaigns.reports import StatusReport, apply_each, close_if_finished

MAX_BATCH = 500

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    """One request's reports: ``campaign_id`` None for an account-level webhook."""

    account: str
    campaign_id: uuid.UUID | None
    reports: list[StatusReport]
    payload: dict


class Batcher:
    """Apply items in batches, one flush at a time; ``apply`` answers with the item's moved count."""

    def __init__(self, apply_batch: Callable[[list[Item]], list[int]] | None = None):
        self.apply_batch = apply_batch or apply_items
        self.pending: list[tuple[Item, asyncio.Future]] = []
        self.flusher: asyncio.Task | None = None

    async def apply(self, item: Item) -> int:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((item, future))
        if self.flusher is None:
            self.flusher = asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
                items = [item for item, _ in batch]
                try:
                    results: list = await run_in_threadpool(self.apply_batch, items)
                except Exception:
                    # One bad item must not fail the others: each is applied alone and answers alone.
                    log.warning("report batch failed; applying its items one by one",
                                extra={"items": len(items)}, exc_info=True)
                    results = [await self._alone(item) for item in items]
                for (_, future), result in zip(batch, results):
                    if future.done():  # the request went away
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self.flusher = None

    async def _alone(self, item: Item) -> int | BaseException:
        try:
            return (await run_in_threadpool(self.apply_batch, [item]))[0]
        except Exception as exc:  # noqa: BLE001 - handed to that request alone
            return exc


def apply_items(items: list[Item]) -> list[int]:
    """Store and apply every item's reports in one transaction, in arrival order; then close the
    campaigns they finished. Returns each item's count of messages moved."""
    with db.session() as s:
        counts = apply_each(s, [(item.account, item.campaign_id, item.reports, item.payload) for item in items])
    touched: set[uuid.UUID] = set()
    for item, moved in zip(items, counts):
        if moved:
            touched |= {item.campaign_id} if item.campaign_id else _campaigns_of(item)
    # Checked after our commit: of two last reports committing together, the later sees both.
    with db.session() as s:
        for cid in touched:
            close_if_finished(s, cid)
    return counts


def _campaigns_of(item: Item) -> set[uuid.UUID]:
    from sqlalchemy import or_, select

    from campaigns.models import Message

    ids = [r.message_id for r in item.reports if r.message_id is not None]
    refs = [r.provider_message_id for r in item.reports if r.provider_message_id]
    with db.session() as s:
        return set(s.scalars(select(Message.campaign_id).distinct().where(or_(
            Message.id.in_(ids), (Message.provider == item.account) & Message.provider_message_id.in_(refs),
        ))))
