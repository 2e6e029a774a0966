"""The one submission schema every interface shares, and the receipt every interface returns."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Recipient(BaseModel):
    """A recipient object: the number under ``to`` or ``number``; other keys are template fields."""

    model_config = ConfigDict(extra="allow")

    to: str | None = None
    number: str | None = None
    name: str | None = None
    client_ref: str | None = Field(default=None, max_length=255)
    callback_url: str | None = None

    @model_validator(mode="after")
    def _has_number(self) -> Recipient:
        if not (self.to or self.number):
            raise ValueError("a recipient needs 'to' or 'number'")
        return self

    @property
    def phone(self) -> str:
        return self.to or self.number or ""

    def template_fields(self) -> dict[str, Any]:
        values = dict(self.model_extra or {})
        if self.name is not None:
            values["name"] = self.name
        return values


class SendWindow(BaseModel):
    start: str = Field(pattern=r"^\d{2}:\d{2}$", examples=["09:00"])
    end: str = Field(pattern=r"^\d{2}:\d{2}$", examples=["20:00"])
    timezone: str | None = Field(default=None, description="fixed zone; default: each recipient's own")


class CampaignSpec(BaseModel):
    """Everything about a campaign except its recipients, which may be streamed."""

    model_config = ConfigDict(populate_by_name=True)

    sender: str = Field(alias="from", min_length=1, max_length=32)
    message: str = Field(min_length=1, max_length=1600)
    default_region: str | None = Field(default=None, min_length=2, max_length=2)
    provider: str | None = None
    route: str | None = None
    scheduled_at: datetime | None = None
    send_now: bool = False
    send_window: SendWindow | None = None
    concurrency: int | None = Field(default=None, ge=1, le=100)
    max_cost: Decimal | None = Field(default=None, ge=0)
    callback_url: str | None = None
    idempotency_key: str | None = Field(default=None, max_length=255)
    metadata: dict[str, Any] | None = None


RawRecipient = str | Recipient


class Submission(CampaignSpec):
    recipients: list[RawRecipient] = Field(min_length=1)


class InvalidSample(BaseModel):
    position: int
    reason: str


class Receipt(BaseModel):
    campaign_id: str
    status: str
    submitted: int
    accepted: int
    duplicates: int
    invalid: int
    suppressed: int
    invalid_reasons: list[InvalidSample] = []
    segments: int
    estimated_cost: Decimal | None = None
