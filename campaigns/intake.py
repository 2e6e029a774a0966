"""Intake: validate, normalise, dedup, suppress, render and store a campaign in one transaction.

Recipients arrive as an iterator and are written in chunks (COPY on PostgreSQL), so a campaign
is never held in memory whole; only the set of numbers already seen grows with its size (kept
as ints, about 70 bytes per unique number: some 70 MB at a million).

Normalising (phonenumbers) is most of intake's CPU. Past ``POOL_AFTER`` recipients the chunks go
to a process pool, one process per CPU, a bounded number of chunks ahead, and come back in order:
deduplication stays here, so the first occurrence still wins and memory stays flat with N.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Sized
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import datetime
from decimal import Decimal
from itertools import islice
from multiprocessing import get_context
from types import ModuleType
from typing import Any

from sqlalchemy import insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from campaigns import clock, db, routes
from campaigns.errors import ConfigurationError, IdempotencyMismatch, SubmissionError, TooManyRecipients
from campaigns.models import DEFAULT_SERVICE_ID, Campaign, Message, Rejection, Suppression
from campaigns.recipients import Prepared, phone_key, prepare
from campaigns.schema import CampaignSpec, InvalidSample, Receipt
from campaigns.segments import encode_info
from campaigns.settings import get_settings
from campaigns.statuses import CampaignStatus, MessageStatus
from campaigns.templates import fields

CHUNK = 5000
# A submission this long is large: starting a pool (~0.5 s) pays for itself only after this.
POOL_AFTER = 50_000
AHEAD = 2  # chunks in flight per pool process: enough to keep it busy, few enough to stay flat
INVALID_SAMPLES = 20
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


def _prepared(recipients: Iterable[Any], default_region: str | None,
              template: str | None) -> Iterator[tuple[int, list[Prepared]]]:
    """``(first position, prepared chunk)`` in order: in this process for a small submission, in a
    process pool once it proves large (a stream has no length to ask up front)."""
    it = iter(recipients)
    position = 0
    processes = get_settings().intake_processes or os.cpu_count() or 1
    in_process = POOL_AFTER if processes > 1 else float("inf")
    while position < in_process and (chunk := list(islice(it, CHUNK))):
        yield position, prepare(chunk, default_region, template)
        position += len(chunk)
    if position < in_process:  # the stream ended while small, or no pool is wanted
        return
    # Never fork this process (it may hold threads and connections): a fork server. As with any
    # multiprocessing pool, a script that submits large campaigns needs the __main__ guard.
    context = get_context("forkserver")
    context.set_forkserver_preload(["campaigns.recipients", *_main_imports()])
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        ahead: deque[tuple[int, Future]] = deque()
        try:
            while True:
                while len(ahead) < processes * AHEAD and (chunk := list(islice(it, CHUNK))):
                    ahead.append((position, pool.submit(prepare, chunk, default_region, template)))
                    position += len(chunk)
                if not ahead:
                    return
                first, future = ahead.popleft()
                yield first, future.result()
        finally:
            for _, future in ahead:
                future.cancel()


def _main_imports() -> list[str]:
    """The modules this process's main module takes its names from.

    Each pool process runs the main module again (multiprocessing does, to unpickle what it
    defines): for ``herald`` or ``uvicorn`` that imports most of the stack, some 60 MB a
    process. Imported once in the fork server instead, those pages are shared. (Python's own
    ``"__main__"`` preload never receives the main module's path, so it imports nothing.)
    """
    main = sys.modules["__main__"]
    names = {getattr(value, "__module__", None) or getattr(value, "__name__", None)
             for value in vars(main).values() if callable(value) or isinstance(value, ModuleType)}
    return sorted(name for name in names if isinstance(name, str) and name in sys.modules
                  and name not in ("__main__", "builtins"))


def _store_recipients(s: Session, campaign: Campaign, recipients: Iterable[Any], limit: int) -> _Tally:
    tally = _Tally()
    # Ints, not strings: about half the memory per unique number at a million recipients.
    seen: set[int] = set()
    cid, template = campaign.id, campaign.template
    fixed = encode_info(template)
    settings = get_settings()
    longest: dict[str | None, int | None] = {}  # per region, what its route's accounts can carry
    listed = or_(Suppression.service_id == campaign.service_id, Suppression.service_id.is_(None))
    check_suppressions = s.scalar(select(Suppression.phone).where(listed).limit(1)) is not None
    for first, prepared in _prepared(recipients, campaign.default_region,
                                     template if fields(template) else None):
        if first + len(prepared) > limit:
            raise _too_many(limit)
        rows: list[tuple] = []
        positions: list[int] = []
        rejections: list[tuple] = []
        for position, outcome in enumerate(prepared, first):
            if not isinstance(outcome, str) and outcome[2] is not None:
                outcome = _carried(outcome, longest, settings, campaign.provider)
            if isinstance(outcome, str):
                rejections.append((cid, position, "invalid", outcome, None))
                tally.invalid += 1
                if len(tally.samples) < INVALID_SAMPLES:
                    tally.samples.append(InvalidSample(position=position, reason=outcome))
                continue
            e164, region, body, client_ref, callback_url = outcome
            key = phone_key(e164)
            if key in seen:
                tally.duplicates += 1
                rejections.append((cid, position, "duplicate", "duplicate of an earlier recipient", e164))
                continue
            seen.add(key)
            enc = encode_info(body) if body is not None else fixed
            rows.append((cid, MessageStatus.QUEUED.value, e164, region, body,
                         enc.name, enc.segments, client_ref, callback_url))
            positions.append(position)
        tally.submitted += len(prepared)

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


def _carried(outcome: Prepared, longest: dict, settings, target: str) -> Prepared | str:
    """The recipient, or why no account of its route can carry its rendered text."""
    region, body = outcome[1], outcome[2]
    if region not in longest:
        longest[region] = routes.longest_text(settings, target, region)
    if longest[region] is not None and len(body) > longest[region]:
        return (f"the rendered message has {len(body):,} characters; no provider account of its "
                f"route takes more than {longest[region]:,}")
    return outcome


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
