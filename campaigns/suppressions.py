"""The suppression list (opt-outs): numbers intake skips and counts as suppressed.

Numbers are normalised like recipients, so ``07400 123456`` (GB) and ``+447400123456`` are one
entry. Each service has its own list (``service_id``); ``service_id=None`` is the global list,
which every campaign honours and only admin edits (the callers check that). Each function is
one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, select

from campaigns import db
from campaigns.models import Suppression
from campaigns.recipients import InvalidRecipient, normalise
from campaigns.schema import InvalidSample


@dataclass
class Change:
    """What an add or remove did: how many numbers changed, were already so, or were invalid."""

    changed: int = 0
    unchanged: int = 0
    invalid: list[InvalidSample] = field(default_factory=list)


def _normalised(numbers: Iterable[str], region: str | None, change: Change) -> list[str]:
    phones: dict[str, None] = {}  # ordered and unique
    for position, raw in enumerate(numbers):
        try:
            phones[normalise(raw, region).e164] = None
        except InvalidRecipient as exc:
            change.invalid.append(InvalidSample(position=position, reason=str(exc)))
    return list(phones)


def _of(service_id: int | None):
    return Suppression.service_id.is_(None) if service_id is None else Suppression.service_id == service_id


def add(numbers: Iterable[str], *, service_id: int | None, region: str | None = None,
        reason: str | None = None) -> Change:
    change = Change()
    phones = _normalised(numbers, region, change)
    with db.session() as s:
        present = set(s.scalars(select(Suppression.phone).where(
            _of(service_id), Suppression.phone.in_(phones)))) if phones else set()
        s.add_all(Suppression(service_id=service_id, phone=p, reason=reason) for p in phones if p not in present)
    change.changed, change.unchanged = len(phones) - len(present), len(present)
    return change


def remove(numbers: Iterable[str], *, service_id: int | None, region: str | None = None) -> Change:
    change = Change()
    phones = _normalised(numbers, region, change)
    with db.session() as s:
        removed = s.execute(delete(Suppression).where(
            _of(service_id), Suppression.phone.in_(phones))).rowcount if phones else 0
    change.changed, change.unchanged = removed, len(phones) - removed
    return change


@dataclass(frozen=True)
class Entry:
    phone: str
    reason: str | None
    created_at: datetime


def entries(*, service_id: int | None, after: str | None = None, limit: int = 1000) -> list[Entry]:
    """One page of one list in number order; pass the last number seen as ``after`` for the next page."""
    query = select(Suppression).where(_of(service_id)).order_by(Suppression.phone).limit(limit)
    if after:
        query = query.where(Suppression.phone > after)
    with db.session() as s:
        return [Entry(r.phone, r.reason, r.created_at) for r in s.scalars(query)]
