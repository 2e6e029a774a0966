"""Intake: validate, normalise, dedup, suppress, render and store a campaign in one transaction.

Recipients arrive as an iterator and are written in chunks (COPY on PostgreSQL), so a campaign
is never held in memory whole; only the set of numbers already seen grows with its size.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from itertools import islice
from typing import Any

from pydantic import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from campaigns import clock, db
from campaigns.errors import ConfigurationError, SubmissionError, TooManyRecipients
from campaigns.models import Campaign, Message, Rejection, Suppression
from campaigns.recipients import InvalidRecipient, normalise
from campaigns.schema import CampaignSpec, InvalidSample, Receipt, Recipient
from campaigns.segments import encode_info
from campaigns.settings import get_settings
from campaigns.statuses import CampaignStatus, MessageStatus
from campaigns.templates import MissingField, fields, render

CHUNK = 5000
INVALID_SAMPLES = 20
_MESSAGE_COLUMNS = (
    "campaign_id", "status", "phone", "region", "body", "encoding", "segments",
    "client_ref", "callback_url",
)


def submit(spec: CampaignSpec, recipients: Iterable[Any], *, now: datetime | None = None) -> Receipt:
    """Store a campaign and return its receipt; nothing is written if anything here fails."""
    settings = get_settings()
    now = now or clock.now()
    if spec.idempotency_key and (receipt := _existing_receipt(spec.idempotency_key)):
        return receipt
    try:
        provider_name, account = settings.provider(spec.provider)
    except ConfigurationError as exc:
        raise SubmissionError(str(exc), [{"loc": ["provider"], "msg": str(exc)}]) from None
    scheduled = spec.scheduled_at is not None and spec.scheduled_at > now
    if spec.scheduled_at is not None and not scheduled and not spec.send_now:
        msg = "scheduled_at is in the past; set send_now to send at once"
        raise SubmissionError(msg, [{"loc": ["scheduled_at"], "msg": msg}])

    try:
        with db.session() as s:
            campaign = Campaign(
                id=uuid.uuid4(),
                status=CampaignStatus.SCHEDULED if scheduled else CampaignStatus.RUNNING,
                sender=spec.sender, template=spec.message, provider=provider_name,
                default_region=spec.default_region, scheduled_at=spec.scheduled_at,
                send_window=spec.send_window.model_dump() if spec.send_window else None,
                concurrency=spec.concurrency, max_cost=spec.max_cost,
                callback_url=spec.callback_url, idempotency_key=spec.idempotency_key,
                meta=spec.metadata, started_at=None if scheduled else now,
            )
            s.add(campaign)
            s.flush()
            tally = _store_recipients(s, campaign, recipients, settings.max_recipients)
            prices = account.prices
            cost = None
            if prices:
                cost = sum(
                    (prices.get(region, prices.get("*", Decimal(0))) * n
                     for region, n in tally.segments_by_region.items()),
                    Decimal(0),
                )
            if spec.max_cost is not None and cost is not None and cost > spec.max_cost:
                msg = f"estimated cost {cost} exceeds max_cost {spec.max_cost}"
                raise SubmissionError(msg, [{"loc": ["max_cost"], "msg": msg}])
            receipt = Receipt(
                campaign_id=str(campaign.id), status=campaign.status,
                submitted=tally.submitted, accepted=tally.accepted, duplicates=tally.duplicates,
                invalid=tally.invalid, suppressed=tally.suppressed,
                invalid_reasons=tally.samples, segments=tally.total_segments,
                estimated_cost=cost,
            )
            campaign.submitted = tally.submitted
            campaign.segments = tally.total_segments
            campaign.estimated_cost = cost
            campaign.receipt = receipt.model_dump(mode="json")
    except IntegrityError:
        # A concurrent submission with the same idempotency key won the race.
        if spec.idempotency_key and (receipt := _existing_receipt(spec.idempotency_key)):
            return receipt
        raise
    return receipt


def _existing_receipt(key: str) -> Receipt | None:
    with db.session() as s:
        stored = s.scalar(select(Campaign.receipt).where(Campaign.idempotency_key == key))
    return Receipt.model_validate(stored) if stored else None


class _Tally:
    def __init__(self) -> None:
        self.submitted = self.accepted = self.duplicates = self.invalid = self.suppressed = 0
        self.total_segments = 0
        self.segments_by_region: dict[str | None, int] = {}
        self.samples: list[InvalidSample] = []


def _coerce(raw: Any) -> Recipient:
    if isinstance(raw, Recipient):
        return raw
    if isinstance(raw, str):
        return Recipient(to=raw)
    if isinstance(raw, dict):
        return Recipient.model_validate(raw)
    raise InvalidRecipient("a recipient must be a string or an object")


def _store_recipients(s: Session, campaign: Campaign, recipients: Iterable[Any], limit: int) -> _Tally:
    tally = _Tally()
    seen: set[str] = set()
    template = campaign.template
    placeholders = bool(fields(template))
    fixed = encode_info(template)
    numbered: Iterator[tuple[int, Any]] = enumerate(recipients)
    while chunk := list(islice(numbered, CHUNK)):
        if chunk[-1][0] >= limit:
            raise TooManyRecipients(
                f"a campaign holds at most {limit} recipients",
                [{"loc": ["recipients"], "msg": f"more than {limit} recipients"}],
            )
        rows: list[dict] = []
        rejections: list[dict] = []

        def reject(position: int, kind: str, reason: str, raw: str | None = None) -> None:
            rejections.append({"campaign_id": campaign.id, "position": position,
                               "kind": kind, "reason": reason, "raw": raw})
            if kind == "invalid":
                tally.invalid += 1
                if len(tally.samples) < INVALID_SAMPLES:
                    tally.samples.append(InvalidSample(position=position, reason=reason))

        for position, raw in chunk:
            tally.submitted += 1
            try:
                recipient = _coerce(raw)
                number = normalise(recipient.phone, campaign.default_region)
                body = render(template, recipient.template_fields()) if placeholders else None
            except (InvalidRecipient, MissingField) as exc:
                reject(position, "invalid", str(exc))
                continue
            except ValidationError as exc:
                reject(position, "invalid", exc.errors()[0]["msg"])
                continue
            if number.e164 in seen:
                tally.duplicates += 1
                reject(position, "duplicate", "duplicate of an earlier recipient", number.e164)
                continue
            seen.add(number.e164)
            enc = encode_info(body) if body is not None else fixed
            rows.append({
                "campaign_id": campaign.id, "status": MessageStatus.QUEUED,
                "phone": number.e164, "region": number.region, "body": body,
                "encoding": enc.name, "segments": enc.segments,
                "client_ref": recipient.client_ref, "callback_url": recipient.callback_url,
                "_position": position,
            })

        suppressed = _suppressed(s, {r["phone"] for r in rows})
        kept = []
        for row in rows:
            position = row.pop("_position")
            if row["phone"] in suppressed:
                tally.suppressed += 1
                reject(position, "suppressed", "the number opted out", row["phone"])
                continue
            kept.append(row)
            tally.accepted += 1
            tally.total_segments += row["segments"]
            tally.segments_by_region[row["region"]] = (
                tally.segments_by_region.get(row["region"], 0) + row["segments"]
            )
        _write_messages(s, kept)
        if rejections:
            s.execute(insert(Rejection), rejections)
    if tally.submitted == 0:
        raise SubmissionError("no recipients", [{"loc": ["recipients"], "msg": "no recipients"}])
    return tally


def _suppressed(s: Session, phones: set[str]) -> set[str]:
    if not phones:
        return set()
    return set(s.scalars(select(Suppression.phone).where(Suppression.phone.in_(phones))))


def _write_messages(s: Session, rows: list[dict]) -> None:
    if not rows:
        return
    if s.bind.dialect.name != "postgresql":
        s.execute(insert(Message), rows)
        return
    raw = s.connection().connection.driver_connection
    with raw.cursor() as cur:
        with cur.copy(f"COPY messages ({', '.join(_MESSAGE_COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(tuple(row[c] for c in _MESSAGE_COLUMNS))
