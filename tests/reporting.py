"""Helpers for report tests: campaigns stored through intake (not sent), marked sent by hand."""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import datetime, timedelta, timezone

import phonenumbers
from phonenumbers import PhoneNumberFormat
from sqlalchemy import String, cast, literal, update

from campaigns import db, intake
from campaigns.models import Message
from campaigns.schema import CampaignSpec
from campaigns.statuses import MessageStatus
from worker.cli import demo

SENT_AT = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def numbers(n: int, seed: int = 5) -> list[str]:
    stream = demo._numbers(random.Random(seed))
    return [phonenumbers.format_number(p, PhoneNumberFormat.E164) for p in itertools.islice(stream, n)]


def stored_campaign(recipients: list, *, message: str = "Your code is 1234", **spec) -> uuid.UUID:
    """A campaign through intake, without fan-out: its messages stay queued until a test moves them."""
    receipt = intake.submit(CampaignSpec.model_validate({"from": "Herald", "message": message, **spec}),
                            recipients)
    return uuid.UUID(receipt.campaign_id)


def mark_sent(campaign_id: uuid.UUID, provider: str = "tiko", sent_at: datetime = SENT_AT) -> list[int]:
    """As if every message had been accepted by ``provider``; its reference is ``pm-<id>``."""
    with db.session() as s:
        ids = s.scalars(
            update(Message).where(Message.campaign_id == campaign_id)
            .values(status=MessageStatus.SENT, provider=provider, sent_at=sent_at,
                    provider_message_id=literal("pm-") + cast(Message.id, String))
            .returning(Message.id)
        ).all()
    return sorted(ids)


def tiko_row(message_id: int, status: str, *, at: datetime | None = None, cost: str | None = "0.05",
             part: int = 1, total_parts: int = 1) -> dict:
    """A TikoSMS delivery report as its callback_url receives it."""
    at = at or SENT_AT + timedelta(seconds=5)
    return {"message_id": f"pm-{message_id}", "status": status, "client_ref": str(message_id),
            "cost": cost, "part": part, "total_parts": total_parts, "mccmnc": "25501",
            "sent_at": SENT_AT.strftime("%Y-%m-%d %H:%M:%S"), "delivered_at": at.strftime("%Y-%m-%d %H:%M:%S")}
