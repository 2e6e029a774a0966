"""Intake: validate, normalise, dedup, suppress, render and store a campaign in one transaction.

Recipients arrive as an iterator and are written in chunks (COPY on PostgreSQL), so a campaign
is never held in memory whole; only the set of numbers already seen grows with its size (kept
as ints, about 70 bytes per unique number: some 70 MB at a million).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sized
from datetime import datetime
from decimal import Decimal
from itertools import islice
from typing import Any

from sqlalchemy import insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from campaigns import clock, db, routes
from campaigns.callbacks import url_problem
from campaigns.errors import ConfigurationError, IdempotencyMismatch, SubmissionError, TooManyRecipients
from campaigns.models import DEFAULT_SERVICE_ID, Campaign, Message, Rejection, Suppression
from campaigns.recipients import InvalidRecipient, normalise, phone_key
from campaigns.schema import CampaignSpec, InvalidSample, Receipt, unstorable
from campaigns.segments import encode_info
from campaigns.settings import get_settings
from campaigns.statuses import CampaignStatus, MessageStatus
from campaigns.templates import MissingField, fields, render

CHUNK = 5000
INVALID_SAMPLES = 20
CLIENT_REF_MAX = 255
CALLBACK_URL_MAX = 2048
_MESSAGE_COLUMNS = (
    "campaign_id", "status", "phone", "region", "body", "encoding", "segments",
    "client_ref", "callback_url",
)
_REJECTION_COLUMNS = ("campaign_id", "position", "kind", "reason", "raw")


def submit(spec: CampaignSpec, recipients: Iterable[Any], *, service_id: int = DEFAULT_SERVICE_ID,
           now: datetime | None = None) -> Receipt:
    """Store a campaign of ``service_id`` and return its receipt; nothing is written if anything here fails."""
    settings = get_settings()
    now = now or clock.now()
    digest = idempotency_digest(spec, recipients) if spec.idempotency_key else None
    if spec.idempotency_key and (receipt := _existing_receipt(service_id, spec.idempotency_key, digest)):
        return receipt
    try:
        provider_name, account = routes.resolve_target(settings, spec.provider)
        routes.check_campaign(settings, provider_name, spec.sender, spec.message)
    except ConfigurationError as exc:
        raise SubmissionError.at(["provider"], str(exc), "unknown_provider") from None
    scheduled = spec.scheduled_at is not None and spec.scheduled_at > now
    if spec.scheduled_at is not None and not scheduled and not spec.send_now:
        raise SubmissionError.at(["scheduled_at"], "scheduled_at is in the past; set send_now to send at once",
                                 "scheduled_in_past")
    if isinstance(recipients, Sized) and len(recipients) > settings.max_recipients:
        raise _too_many(settings.max_recipients)

    try:
        with db.session() as s:
            campaign = Campaign(
                id=uuid.uuid4(),
                status=CampaignStatus.SCHEDULED if scheduled else CampaignStatus.RUNNING,
                sender=spec.sender, template=spec.message, provider=provider_name,
                default_region=spec.default_region, scheduled_at=spec.scheduled_at,
                send_window=spec.send_window.model_dump() if spec.send_window else None,
                concurrency=spec.concurrency, priority=spec.priority, max_cost=spec.max_cost,
                callback_url=spec.callback_url, idempotency_key=spec.idempotency_key,
                service_id=service_id, idempotency_digest=digest,
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
                raise SubmissionError.at(["max_cost"], f"estimated cost {cost} exceeds max_cost {spec.max_cost}",
                                         "max_cost_exceeded")
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
        if spec.idempotency_key and (receipt := _existing_receipt(service_id, spec.idempotency_key, digest)):
            return receipt
        raise
    return receipt


def _too_many(limit: int) -> TooManyRecipients:
    return TooManyRecipients.at(
        ["recipients"], f"a campaign holds at most {limit:,} recipients (HERALD_MAX_RECIPIENTS)",
        "too_many_recipients")


def idempotency_digest(spec: CampaignSpec, recipients: Iterable[Any]) -> dict[str, str]:
    """A digest per submitted field, so a reused key's mismatch can be named field by field.

    Recipients count only when given whole (a list); a streamed file cannot be read twice.
    """
    fields_ = spec.model_dump(mode="json", by_alias=True, exclude={"idempotency_key", "recipients"},
                             exclude_none=True)
    if isinstance(recipients, list | tuple):
        fields_["recipients"] = list(recipients)
    return {name: hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:32]
            for name, value in fields_.items()}


def _existing_receipt(service_id: int, key: str, digest: dict[str, str] | None) -> Receipt | None:
    """The first receipt for this service's key, or IdempotencyMismatch if this body differs from the first."""
    with db.session() as s:
        row = s.execute(select(Campaign.receipt, Campaign.idempotency_digest).where(
            Campaign.service_id == service_id, Campaign.idempotency_key == key)).first()
    if row is None or not row.receipt:
        return None
    first, now = row.idempotency_digest or {}, digest or {}
    # A streamed submission has no recipients digest: then only the other fields can be compared.
    comparable = set(first) | set(now) if "recipients" in first and "recipients" in now else \
        (set(first) | set(now)) - {"recipients"}
    differ = sorted(name for name in comparable if first.get(name) != now.get(name))
    if differ:
        raise IdempotencyMismatch(
            "this idempotency key was used with another body; differing fields: " + ", ".join(differ),
            [{"loc": [name], "msg": "differs from the first submission with this idempotency key",
              "type": "idempotency_mismatch"} for name in differ])
    return Receipt.model_validate(row.receipt)


class _Tally:
    def __init__(self) -> None:
        self.submitted = self.accepted = self.duplicates = self.invalid = self.suppressed = 0
        self.total_segments = 0
        self.segments_by_region: dict[str | None, int] = {}
        self.samples: list[InvalidSample] = []


# PostgreSQL text cannot hold NUL; a file with one in a field loses that recipient, not the campaign.
NUL_REASON = "a field holds a NUL (\\u0000) or lone surrogate character, which text cannot hold"


def read_recipient(raw: Any) -> tuple[str, Mapping[str, Any] | None, str | None, str | None]:
    """``(number, template fields, client_ref, callback_url)`` of one raw recipient.

    Plain code rather than a pydantic model per row: this runs once per recipient, a million
    times for a large campaign. Empty strings (a blank CSV cell) count as absent.
    """
    if isinstance(raw, str):
        return raw, None, None, None
    if isinstance(raw, InvalidRecipient):  # a source could not read this one (campaigns.sources)
        raise raw
    if not isinstance(raw, Mapping):
        raise InvalidRecipient("a recipient must be a string or an object")
    phone = raw.get("to") or raw.get("number")
    if not phone:
        raise InvalidRecipient("no number under 'to' or 'number'")
    if not isinstance(phone, str):
        raise InvalidRecipient("the number must be a string")
    client_ref = raw.get("client_ref") or None
    if client_ref is not None and (not isinstance(client_ref, str) or len(client_ref) > CLIENT_REF_MAX):
        raise InvalidRecipient(f"client_ref must be a string of at most {CLIENT_REF_MAX} characters")
    callback_url = raw.get("callback_url") or None
    if callback_url is not None and not (isinstance(callback_url, str) and len(callback_url) <= CALLBACK_URL_MAX
                                         and url_problem(callback_url) is None):
        raise InvalidRecipient(f"callback_url must be an http(s) URL with a host, at most {CALLBACK_URL_MAX} characters")
    if unstorable(f"{client_ref or ''}{callback_url or ''}"):
        raise InvalidRecipient(NUL_REASON)
    return phone, raw, client_ref, callback_url


def _store_recipients(s: Session, campaign: Campaign, recipients: Iterable[Any], limit: int) -> _Tally:
    tally = _Tally()
    # Ints, not strings: about half the memory per unique number at a million recipients.
    seen: set[int] = set()
    cid, region_default, template = campaign.id, campaign.default_region, campaign.template
    placeholders = bool(fields(template))
    fixed = encode_info(template)
    settings = get_settings()
    longest: dict[str | None, int | None] = {}  # per region, what its route's accounts can carry
    listed = or_(Suppression.service_id == campaign.service_id, Suppression.service_id.is_(None))
    check_suppressions = s.scalar(select(Suppression.phone).where(listed).limit(1)) is not None
    numbered: Iterator[tuple[int, Any]] = enumerate(recipients)
    while chunk := list(islice(numbered, CHUNK)):
        if chunk[-1][0] >= limit:
            raise _too_many(limit)
        rows: list[tuple] = []
        positions: list[int] = []
        rejections: list[tuple] = []
        for position, raw in chunk:
            try:
                phone, values, client_ref, callback_url = read_recipient(raw)
                number = normalise(phone, region_default)
                body = render(template, values or {}) if placeholders else None
                if body is not None:
                    if unstorable(body):
                        raise InvalidRecipient(NUL_REASON)
                    if number.region not in longest:
                        longest[number.region] = routes.longest_text(settings, campaign.provider, number.region)
                    if (limit_ := longest[number.region]) is not None and len(body) > limit_:
                        raise InvalidRecipient(f"the rendered message has {len(body):,} characters; no provider "
                                               f"account of its route takes more than {limit_:,}")
            except (InvalidRecipient, MissingField) as exc:
                reason = str(exc)
                rejections.append((cid, position, "invalid", reason, None))
                tally.invalid += 1
                if len(tally.samples) < INVALID_SAMPLES:
                    tally.samples.append(InvalidSample(position=position, reason=reason))
                continue
            key = phone_key(number.e164)
            if key in seen:
                tally.duplicates += 1
                rejections.append((cid, position, "duplicate", "duplicate of an earlier recipient", number.e164))
                continue
            seen.add(key)
            enc = encode_info(body) if body is not None else fixed
            rows.append((cid, MessageStatus.QUEUED.value, number.e164, number.region, body,
                         enc.name, enc.segments, client_ref, callback_url))
            positions.append(position)
        tally.submitted += len(chunk)

        suppressed = _suppressed(s, listed, {r[2] for r in rows}) if check_suppressions and rows else set()
        kept = []
        for row, position in zip(rows, positions):
            if row[2] in suppressed:
                tally.suppressed += 1
                rejections.append((cid, position, "suppressed", "the number opted out", row[2]))
                continue
            kept.append(row)
            tally.total_segments += row[6]
            tally.segments_by_region[row[3]] = tally.segments_by_region.get(row[3], 0) + row[6]
        tally.accepted += len(kept)
        _write(s, Message, _MESSAGE_COLUMNS, kept)
        _write(s, Rejection, _REJECTION_COLUMNS, rejections)
    if tally.submitted == 0:
        raise SubmissionError.at(["recipients"], "no recipients", "no_recipients")
    return tally


def _suppressed(s: Session, listed, phones: set[str]) -> set[str]:
    return set(s.scalars(select(Suppression.phone).where(listed, Suppression.phone.in_(phones))))


def _write(s: Session, model: type, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Bulk insert: COPY on PostgreSQL, executemany elsewhere."""
    if not rows:
        return
    if s.bind.dialect.name != "postgresql":
        s.execute(insert(model), [dict(zip(columns, row)) for row in rows])
        return
    raw = s.connection().connection.driver_connection
    with raw.cursor() as cur:
        with cur.copy(f"COPY {model.__tablename__} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
